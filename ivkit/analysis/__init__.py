"""Floor 8: analyses built on the pipeline: tracking IVs and accuracy across checkpoints
(`tracking`)."""

from .tracking import Tracking, track

__all__ = ["Tracking", "track"]
