"""Floor 8: analyses built on the pipeline: tracking IVs and accuracy across checkpoints
(:mod:`~ivkit.analysis.tracking`)."""

from .tracking import Tracking, track

__all__ = ["Tracking", "track"]
