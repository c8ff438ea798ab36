"""Floor 8: fine-tuning on transformers' Trainer, plain or IV-guided (`finetune`), and a
callback that watches IVs while a model trains."""

from .config import FinetuneConfig, GuidanceConfig
from .finetune import FinetuneResult, finetune

__all__ = ["FinetuneConfig", "FinetuneResult", "GuidanceConfig", "finetune"]
