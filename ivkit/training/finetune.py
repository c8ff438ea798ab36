"""Fine-tuning on `transformers.Trainer`, plain or IV-guided, seeded and resumable.

Concepts
--------
* **Data**: ``{"input", "output"}`` pairs (a task name or file) written as instruction prompts
  (`ivkit.training.data`); the loss is the causal-LM loss on the answer tokens only.
* **The trainer** is Hugging Face's: AdamW, the learning-rate schedule and warmup, gradient
  clipping and accumulation, checkpoints in its layout (``OUT/checkpoint-<step>/``: the model or
  the LoRA adapter, the tokenizer, ``trainer_state.json``; the newest also keeps the optimizer,
  scheduler and RNG state), and resumption come from it. It runs unchanged under
  ``accelerate launch`` (several GPUs, DeepSpeed or FSDP, or several CPU processes).
* **Full fine-tuning** (default) or **LoRA** (``lora=True``, through ``peft``: rank 8, alpha 16 on
  ``q_proj`` and ``v_proj`` by default, as in Jiang et al.).
* **IV-guided training** (``iv=...``): see `ivkit.training.guided`. The teacher's outputs are
  computed once, before the first step, and kept in ``OUT/teacher_cache.safetensors``.
* **Seeded and resumable**: the data order, LoRA's initialisation and dropout follow ``seed``; a
  rerun into the same ``OUT`` continues from the newest complete checkpoint (its optimizer,
  scheduler, RNG state and place in the data) and ends where an uninterrupted run would. A run
  directory made with other settings is refused.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments

from ..core.errors import IVKitError
from ..core.html import sparkline, table
from ..core.io import atomic_write_json
from ..core.tasks import Task, load_task
from ..models.loading import load_model
from ..models.model import IVModel
from ..vectors import InstructionVector
from .callbacks import IVTracking
from .config import FinetuneConfig, GuidanceConfig
from .data import Collator, FeatureDataset, Features, build_features
from .guided import GuidedObjective
from .teacher import TeacherCache, build_teacher_cache
from .trainer import IVKitTrainer, RunBookkeeping, remove_partial

log = logging.getLogger(__name__)

RUN_FILE = "ivkit_run.json"
#: what a checkpoint must hold to be resumed from exactly
RESUME_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


@dataclass(frozen=True)
class FinetuneResult:
    """Where a run wrote its checkpoints, and what it logged.

    Attributes:
        out: the run directory.
        checkpoints: the ``checkpoint-<step>`` folders, in order.
        losses: ``[(step, loss)]`` for every step (a resumed run's include the earlier ones).
        steps_per_second: the speed of this process's steps (0 when nothing was left to run).
        log_history: the Trainer's log, one dict per logged step (with the guided terms).
        config: the run's settings as saved in ``ivkit_run.json``.
    """

    out: Path
    checkpoints: list[Path]
    losses: list[tuple[int, float]] = field(default_factory=list)
    steps_per_second: float = 0.0
    log_history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_pandas(self):
        """The log, one row per logged step."""
        import pandas as pd

        return pd.DataFrame(self.log_history)

    def _repr_html_(self) -> str:
        cks = [{"checkpoint": p.name} for p in self.checkpoints]
        return (f"<b>{html.escape(repr(self))}</b>" + sparkline([l for _, l in self.losses], caption="loss per step")
                + table(cks))

    def __repr__(self) -> str:
        last = f", final loss {self.losses[-1][1]:.4f}" if self.losses else ""
        return f"FinetuneResult({str(self.out)!r}, {len(self.checkpoints)} checkpoints, {len(self.losses)} steps{last})"


def finetune(model: IVModel | str, data: Task | str, out: str | Path, config: FinetuneConfig | None = None, *,
             iv: InstructionVector | str | Path | None = None, guidance: GuidanceConfig | None = None,
             track: Mapping[Any, InstructionVector] | None = None, track_every: int = 10,
             callbacks: Sequence[TrainerCallback] = (), resume: bool = True, progress: bool = True,
             **options: Any) -> FinetuneResult:
    """Fine-tune on ``data`` and save a checkpoint every ``save_every`` steps.

    Args:
        model: an `IVModel` or anything `load_model` takes. Trained in
            place (full fine-tuning); pass a fresh load if you still need the original.
        data: a task name or a JSON/JSONL file of ``{"input", "output"}``; all its examples train.
        out: the run directory.
        config: the settings (`FinetuneConfig`), or give them as
            keyword ``options`` (``steps=80, lr=2e-4, lora=True, ...``).
        iv: an IV (or its directory) of the training task, built on this model: IV-guided training
            with ``guidance`` (default `GuidanceConfig`).
        track: held-apart task -> its IV on the model before fine-tuning: every ``track_every``
            steps their IV similarity and residual alignment go into the log
            (`IVTracking`).
        callbacks: more Trainer callbacks.
        resume: continue from the newest checkpoint in ``out`` (else refuse a non-empty ``out``).
    """
    if config is not None and options:
        raise TypeError("give a config or keyword options, not both")
    cfg = config or FinetuneConfig.from_options(**options)
    ivm, task, out = load_model(model), load_task(data), Path(out)
    instruction = cfg.instruction if cfg.instruction is not None else task.instruction
    feats = build_features(ivm, task.examples, instruction=instruction, chat=cfg.chat, template=cfg.template,
                           max_len=cfg.max_len)
    vec = InstructionVector.load(iv, ivm) if isinstance(iv, (str, Path)) else iv
    guide = (guidance or GuidanceConfig()) if vec is not None else None
    run = _run_record(ivm, task, feats, cfg, vec, guide)
    latest = _prepare_run_dir(out, run, resume)
    objective = _objective(ivm, vec, guide, feats, out, progress) if vec is not None else None
    if latest is not None and _step(latest) >= cfg.steps:  # finished: load it (Trainer would take one more step)
        return _finished(ivm, latest, cfg, out, run)
    torch.manual_seed(cfg.seed)  # LoRA's initialisation
    net = _with_lora(ivm.model, cfg) if cfg.lora else ivm.model
    books = RunBookkeeping()
    watch = [IVTracking(ivm, track, every=track_every)] if track else []
    trainer = IVKitTrainer(model=net, args=_training_args(out, cfg, progress), train_dataset=FeatureDataset(feats),
                           data_collator=Collator(ivm.pad_token_id), processing_class=ivm.tokenizer,
                           objective=objective, callbacks=[books, *watch, *callbacks])
    try:
        trainer.train(resume_from_checkpoint=str(latest) if latest is not None else None)
    finally:
        net.eval()
    if cfg.lora:  # leave the caller a plain model: the adapters merged
        ivm.model = net.merge_and_unload().eval()
    history = list(trainer.state.log_history)
    losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    log.info("fine-tuned to step %d at %.2f steps/s in %s", trainer.state.global_step, books.steps_per_second, out)
    return FinetuneResult(out, _checkpoints(out), losses, books.steps_per_second, history, run)


def _training_args(out: Path, cfg: FinetuneConfig, progress: bool) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_schedule,
        warmup_steps=cfg.warmup_steps, max_grad_norm=cfg.max_grad_norm or None, weight_decay=cfg.weight_decay,
        optim="adamw_torch", seed=cfg.seed, data_seed=cfg.seed, save_strategy="steps", save_steps=cfg.save_every,
        logging_steps=1, report_to="none", remove_unused_columns=False, disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False, dataloader_num_workers=0,
        average_tokens_across_devices=True)


def _with_lora(net: Any, cfg: FinetuneConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise IVKitError("lora=True needs peft: pip install peft") from None
    return get_peft_model(net, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                                          lora_dropout=0.0, task_type="CAUSAL_LM"))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_record(ivm: IVModel, task: Task, feats: list[Features], cfg: FinetuneConfig, iv: InstructionVector | None,
                guide: GuidanceConfig | None) -> dict[str, Any]:
    """What the run is: the model, the data, the settings (``steps`` aside: a run may be extended)."""
    return {"model": ivm.identity(), "data": task.name, "data_source": task.source, "n_examples": len(feats),
            "data_digest": _digest([(f.input_ids, f.labels) for f in feats]),
            "config": {k: v for k, v in cfg.to_dict().items() if k != "steps"},
            "iv": None if iv is None else {"task": iv.meta.get("task"), "digest": _digest(iv.vector.tolist()),
                                           "layer": iv.layer, "scale": iv.scale, "injection": iv.injection},
            "guidance": None if guide is None else guide.to_dict()}


def _prepare_run_dir(out: Path, run: dict[str, Any], resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start), after refusing a directory of another run."""
    record = out / RUN_FILE
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise IVKitError(f"{out} is not empty and resume is off: choose a new out directory, or resume the run "
                             f"in it")
        if record.exists() and json.loads(record.read_text()) != json.loads(json.dumps(run, default=str)):
            raise IVKitError(f"{out} holds a run with other settings (model, data, options or IV); resume it with "
                             f"the same settings or choose a new out directory")
    if out.exists():
        remove_partial(out)
    atomic_write_json(out / RUN_FILE, run)
    found = _checkpoints(out)
    if not found:
        return None
    missing = [n for n in RESUME_FILES if not (found[-1] / n).exists()]
    if missing:
        raise IVKitError(f"{found[-1]} has no {', '.join(missing)}, so the run cannot continue as it would have "
                         f"without the interruption; start a new out directory")
    log.info("resuming %s from %s", out, found[-1].name)
    return found[-1]


def _step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[-1])


def _finished(ivm: IVModel, ckpt: Path, cfg: FinetuneConfig, out: Path, run: dict[str, Any]) -> FinetuneResult:
    """The result of a run that already reached its last step, its weights loaded into ``ivm``."""
    if cfg.lora:
        from peft import PeftModel

        ivm.model = PeftModel.from_pretrained(ivm.model, str(ckpt)).merge_and_unload().eval()
    else:
        weights: dict[str, torch.Tensor] = {}
        for f in sorted(ckpt.glob("*.safetensors")):
            weights.update(load_file(str(f)))
        missing, unexpected = ivm.model.load_state_dict(weights, strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise IVKitError(f"{ckpt} does not match the model ({missing[:3]}, {unexpected[:3]})")
        if getattr(ivm.model.config, "tie_word_embeddings", False):
            ivm.model.tie_weights()
    history = json.loads((ckpt / "trainer_state.json").read_text())["log_history"]
    losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    log.info("%s already reached step %d: nothing to train", out, _step(ckpt))
    return FinetuneResult(out, _checkpoints(out), losses, 0.0, history, run)


def _checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _objective(ivm: IVModel, iv: InstructionVector, guide: GuidanceConfig, feats: list[Features], out: Path,
               progress: bool) -> GuidedObjective:
    """The guided terms, with the teacher's outputs loaded from ``out`` or computed now (before any
    training step, so from the model before fine-tuning)."""
    key = _digest({"iv": iv.vector.tolist(), "layer": iv.layer, "scale": guide.teacher_scale or iv.scale,
                   "injection": iv.injection, "feats": [(f.input_ids, f.prompt_end) for f in feats],
                   "model": ivm.identity(), "t": guide.temperature, "k": guide.top_k, "heads": guide.consistency > 0})
    path = out / "teacher_cache.safetensors"
    cache = TeacherCache.load(path, key)
    if cache is None:
        cache = build_teacher_cache(ivm, feats, iv, temperature=guide.temperature, top_k=guide.top_k,
                                    scale=guide.teacher_scale, record_heads=guide.consistency > 0, progress=progress)
        cache.save(path, key)
    return GuidedObjective(ivm, iv, guide, cache)
