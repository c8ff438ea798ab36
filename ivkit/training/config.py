"""The settings of a fine-tuning run (`FinetuneConfig`) and of IV-guided training
(`GuidanceConfig`), each checked once, on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.errors import InputError
from ..core.options import check_at_least, check_choice, shown, unknown_option
from ..core.prompts import DEFAULT_TEMPLATE, PromptTemplate

LRSchedule = Literal["constant", "linear", "cosine"]
IVSchedule = Literal["progressive", "constant", "none"]


def _opt(default: Any, help: str, cli: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, **({"cli": cli} if cli is not None else {})})


def _positive(name: str, value: float, *, zero: bool = False) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise InputError(f"{shown(name)} must be a finite number {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FinetuneConfig:
    """How a model is fine-tuned (on `transformers.Trainer`)."""

    steps: int = _opt(100, "optimizer steps")
    save_every: int = _opt(20, "save a checkpoint every this many steps (and at the last)")
    batch_size: int = _opt(8, "examples per step per process")
    grad_accum: int = _opt(1, "gradient accumulation steps (the batch of a step is batch_size x grad_accum)")
    lr: float | None = _opt(None, "learning rate (default 5e-5 full, 1e-4 LoRA)")
    lr_schedule: LRSchedule = _opt("constant", "learning-rate schedule after the warmup")
    warmup_steps: int = _opt(0, "linear warmup steps")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0: none)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    seed: int = _opt(0, "seeds the data order, the initialisation of LoRA adapters and dropout")
    lora: bool = _opt(False, "train LoRA adapters (peft) instead of all weights")
    lora_r: int = _opt(8, "LoRA rank")
    lora_alpha: int = _opt(16, "LoRA alpha")
    lora_targets: tuple[str, ...] = _opt(("q_proj", "v_proj"), "modules LoRA adapts")
    chat: bool = _opt(False, "format examples with the model's chat template")
    instruction: str | None = _opt(None, "the instruction line (default: the task's own; none: the bare Q:/A: "
                                         "template)")
    template: PromptTemplate = _opt(DEFAULT_TEMPLATE, "the prompt template", cli="")
    max_len: int = _opt(128, "longest sequence (tokens; the prompt's start is cut, never the answer)")

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("save_every", 1), ("batch_size", 1), ("grad_accum", 1), ("warmup_steps", 0),
                          ("seed", 0), ("lora_r", 1), ("lora_alpha", 1), ("max_len", 8)):
            check_at_least(name, getattr(self, name), low)
        check_choice("lr_schedule", self.lr_schedule, LRSchedule)
        if self.lr is not None:
            _positive("lr", self.lr)
        _positive("max_grad_norm", self.max_grad_norm, zero=True)
        _positive("weight_decay", self.weight_decay, zero=True)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.lora else 5e-5)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(template=self.template.to_dict(), lora_targets=list(self.lora_targets), lr=self.learning_rate)
        return out

    @classmethod
    def from_options(cls, **options: Any) -> "FinetuneConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        for name in options:
            if name not in known:
                raise unknown_option(name, known, "finetune")
        return cls(**options)


@dataclass(frozen=True)
class GuidanceConfig:
    """IV-guided training (see `ivkit.training.guided`): the weights of the KL terms toward the
    IV-steered model before fine-tuning, and the schedule of the IV added to the student."""

    alpha_last: float = _opt(20.0, "weight of the KL at the last prompt token")
    alpha_answer: float = _opt(0.1, "weight of the KL over the answer positions")
    temperature: float = _opt(2.0, "softmax temperature of both KL terms")
    kl_threshold: float = _opt(0.1, "a KL term counts only when the batch's KL is above this")
    top_k: int = _opt(128, "teacher logits kept per position (plus the log-sum-exp; the rest is one bucket)")
    schedule: IVSchedule = _opt("progressive", "the IV added to the student: progressive (full strength for the "
                                               "first quarter of the steps, falling to 0 by three quarters in "
                                               "steps of 0.1), constant, or none")
    consistency: float = _opt(0.0, "weight of the MSE between the IV's heads' outputs now and before fine-tuning, "
                                   "at the last prompt token (0: off)")
    consistency_threshold: float = _opt(0.01, "the consistency term counts only above this")
    teacher_scale: float | None = _opt(None, "scale of the IV in the teacher (default: the IV's own)")

    def __post_init__(self) -> None:
        for name in ("alpha_last", "alpha_answer", "kl_threshold", "consistency", "consistency_threshold"):
            _positive(name, getattr(self, name), zero=True)
        _positive("temperature", self.temperature)
        check_at_least("top_k", self.top_k, 1)
        check_choice("schedule", self.schedule, IVSchedule)
        if self.teacher_scale is not None:
            _positive("teacher_scale", self.teacher_scale, zero=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_options(cls, **options: Any) -> "GuidanceConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        for name in options:
            if name not in known:
                raise unknown_option(name, known, "IV-guided training")
        return cls(**options)
