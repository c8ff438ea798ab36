"""Floor 2: the exact continuation engine (:mod:`~ivkit.engine.continuation`) and the one place that
knows how a decoder block is called (:mod:`~ivkit.engine.blockcall`)."""
