"""Floor 1: a loaded model (`IVModel`), how it is loaded, run (backends) and hooked, and
series of its checkpoints. Imports only `ivkit.core`."""
