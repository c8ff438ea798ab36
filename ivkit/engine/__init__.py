"""Floor 2: the exact continuation engine (`continuation`) and the one place that
knows how a decoder block is called (`blockcall`)."""
