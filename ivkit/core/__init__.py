"""Floor 0: what everything else builds on, importing nothing else of ivkit: errors, option types,
files, the architecture table, tasks and prompts, answer readouts, statistics and plots."""
