"""Floor 1: a loaded model (:class:`IVModel`), how it is loaded, run (backends) and hooked, and
series of its checkpoints. Imports only :mod:`ivkit.core`."""
