"""ivkit's `transformers.Trainer`: the task loss on answer tokens, plus (for IV-guided
training) the terms of `GuidedObjective`, each logged on its own.

Everything else (optimizer, schedules, warmup, clipping, gradient accumulation, checkpoints with
their optimizer and RNG state, resumption, ``accelerate launch`` across processes) is the
Trainer's own.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..core.io import progress_bar
from .callbacks import IVTracking
from .guided import GuidedObjective, iv_strength

log = logging.getLogger(__name__)


class IVKitTrainer(Trainer):
    """A Trainer whose batches carry ``prompt_end`` and ``index`` (see
    `Collator`), and whose loss adds the guided terms when given
    ``objective``."""

    def __init__(self, *args: Any, objective: GuidedObjective | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for printer in (PrinterCallback, ProgressCallback):  # they print logs to stdout, where results go
            self.remove_callback(printer)
        self.add_callback(LoggedProgress(not self.args.disable_tqdm))
        for cb in [c for c in self.callback_handler.callbacks if isinstance(c, IVTracking)]:
            self.callback_handler.callbacks.remove(cb)
            IVTracking.install(self, cb)  # before the loggers, so that they see its numbers
        self.objective = objective
        self._sums: dict[str, float] = {}
        self._count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        prompt_end, index = inputs.pop("prompt_end"), inputs.pop("index")
        if self.objective is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        strength = iv_strength(self.state.global_step, self.state.max_steps, self.objective.cfg.schedule)
        with self.objective.student(prompt_end, strength) as rec:
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
        extra, raw = self.objective.terms(outputs.logits, prompt_end, index, rec)
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            extra = extra / self.current_gradient_accumulation_steps  # the task loss already is
        self._add(loss_task=float(loss.detach()), iv_strength=strength, **raw)
        total = loss + extra
        return (total, outputs) if return_outputs else total

    def _add(self, **values: float) -> None:
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log, with each guided term averaged over the batches since the last one."""
        if "loss" in logs and self._count:
            logs.update({k: v / self._count for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
        super().log(logs, start_time)


class LoggedProgress(TrainerCallback):
    """A progress bar on stderr, and each logged step through ``logging`` (not print: stdout is for
    results)."""

    def __init__(self, progress: bool):
        self.progress, self.bar = progress, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = progress_bar(total=state.max_steps, initial=state.global_step, desc="fine-tuning",
                                progress=self.progress)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            log.info("step %d: %s", state.global_step, ", ".join(f"{k} {v:.4g}" for k, v in logs.items()
                                                                   if isinstance(v, (int, float))))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class RunBookkeeping(TrainerCallback):
    """Saves at the last step too, keeps the optimizer and scheduler state only in the newest
    checkpoint (resuming needs no more; for full fine-tuning it is twice the model's size), and
    times this process's steps."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.steps = 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.started is None:
            self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        if state.global_step >= state.max_steps:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        newest = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        for older in Path(args.output_dir).glob("checkpoint-*"):
            if older != newest:
                for name in ("optimizer.pt", "scheduler.pt"):
                    (older / name).unlink(missing_ok=True)
        return control

    @property
    def steps_per_second(self) -> float:
        return self.steps / (time.perf_counter() - self.started) if self.started else 0.0


def remove_partial(out: Path) -> None:
    """Drop checkpoint folders a killed run left half-written (no ``trainer_state.json``)."""
    for p in out.glob("checkpoint-*"):
        if p.is_dir() and not (p / "trainer_state.json").exists():
            shutil.rmtree(p, ignore_errors=True)

