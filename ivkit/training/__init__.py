"""Floor 8: fine-tuning that makes checkpoints (:func:`finetune`)."""

from .finetune import FinetuneResult, finetune

__all__ = ["FinetuneResult", "finetune"]
