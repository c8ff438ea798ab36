"""Watching instruction vectors while a model trains: a `transformers.TrainerCallback`.

Every ``every`` steps (and before the first), `IVTracking` measures, on the model being
trained and for each held-apart task with a reference IV (extracted on the model before
fine-tuning):

* ``iv_cosine/<task>``: the cosine between the IV rebuilt from the reference IV's heads (their mean
  outputs over fixed clean few-shot prompts) on the current weights and the same rebuilt on the
  weights the callback was created with (before fine-tuning): 1 at the start, by construction, so
  that any change is the training's;
* ``alignment/<task>``: the mean cosine between the last-token residual stream of zero-shot
  validation prompts and the reference IV, after the IV's layer (the peak over layers for a heads
  IV); does the model still move towards the IV when it sees the task?
* with ``accuracy=True``, ``zero_shot_iv/<task>`` and ``few_shot/<task>``: top-1 on validation
  queries with the reference IV injected, and with clean 10-shot prompts.

The numbers go into the Trainer's log (``trainer.state.log_history`` and every logger the Trainer
reports to: TensorBoard, W&B, ...), so forgetting shows while it happens, not only across saved
checkpoints. Insert it before the reporting callbacks (`IVTracking.install`, done for you by
`ivkit.finetune`) so that they see the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from transformers import TrainerCallback

from ..activations import mean_head_activations, residual_alignment
from ..core.prompts import EncodedPrompts, encode_prompts, sample_prompts
from ..core.tasks import Task, load_task
from ..evaluation import score_prompts
from ..models.model import IVModel
from ..vectors import InstructionVector


@dataclass(frozen=True, eq=False)
class _Watched:
    task: str
    iv: InstructionVector
    clean: EncodedPrompts
    zero_shot: EncodedPrompts
    few_shot: EncodedPrompts
    start: torch.Tensor  # the IV rebuilt on the weights before training


class IVTracking(TrainerCallback):
    """Logs IV similarity and residual alignment (and optionally accuracy) of held-apart tasks
    every ``every`` steps (see the module docstring).

    Args:
        model: the `IVModel` whose weights are being trained.
        references: task (a name, a file or a `Task`) -> its IV on the model before
            fine-tuning (`ivkit.extract`).
        every: measure every this many optimizer steps.
        n_prompts: clean prompts for the means, and validation queries for the alignment/accuracy.
        accuracy: also measure zero-shot + IV and 10-shot top-1.
        seed: seeds the prompts.
    """

    def __init__(self, model: IVModel, references: Mapping[Any, InstructionVector], *, every: int = 10,
                 n_prompts: int = 50, accuracy: bool = False, shots: int = 10, seed: int = 0):
        self.model, self.every, self.accuracy = model, max(1, int(every)), accuracy
        self.watched = [self._watch(load_task(t), iv, n_prompts, shots, seed) for t, iv in references.items()]
        self.pending: dict[str, float] = {}
        self.seconds = 0.0

    def _watch(self, task: Task, iv: InstructionVector, n: int, shots: int, seed: int) -> _Watched:
        iv.check_compatible(self.model)
        split = task.split(seed)
        clean = sample_prompts(split.train, style="few_shot", demo_pool=split.train, shots=shots, n=n, seed=seed,
                               stream=21)
        zero = sample_prompts(split.valid, style="zero_shot", n=n, seed=seed, stream=22)
        few = sample_prompts(split.valid, style="few_shot", demo_pool=split.train, shots=shots, n=n, seed=seed,
                             stream=22)
        enc = lambda p: encode_prompts(self.model, p)  # noqa: E731
        clean_enc = enc(clean)
        return _Watched(task.name, iv, clean_enc, enc(zero), enc(few), self._rebuild(iv, clean_enc).vector)

    @torch.inference_mode()
    def _rebuild(self, iv: InstructionVector, clean: EncodedPrompts) -> InstructionVector:
        means = mean_head_activations(self.model, clean, progress=False)
        return InstructionVector.build(self.model, means, heads=iv.heads,
                                       post_norm=iv.meta.get("post_norm") or "linearized")

    @classmethod
    def install(cls, trainer: Any, callback: "IVTracking") -> None:
        """Put ``callback`` first among ``trainer``'s callbacks, so that loggers see its numbers."""
        trainer.callback_handler.callbacks.insert(0, callback)

    @torch.inference_mode()
    def measure(self) -> dict[str, float]:
        """The numbers for the model's current weights (see the module docstring)."""
        t0, out = time.perf_counter(), {}
        training = self.model.model.training
        self.model.model.eval()
        try:
            for w in self.watched:
                out[f"iv_cosine/{w.task}"] = self._rebuild(w.iv, w.clean).cosine(w.start)
                profile = residual_alignment(self.model, w.zero_shot, w.iv.vector)
                out[f"alignment/{w.task}"] = profile[w.iv.layer] if w.iv.layer is not None else max(profile)
                if self.accuracy:
                    out[f"zero_shot_iv/{w.task}"] = score_prompts(self.model, w.zero_shot, vector=w.iv).accuracy(1)
                    out[f"few_shot/{w.task}"] = score_prompts(self.model, w.few_shot).accuracy(1)
        finally:
            self.model.model.train(training)
        self.seconds += time.perf_counter() - t0
        return out

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.pending = self.measure()
            state.log_history.append({**self.pending, "step": 0})
            self.pending = {}
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.pending = self.measure()
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.pending and logs is not None:
            logs.update(self.pending)
            state.log_history[-1].update(self.pending)
            self.pending = {}
        return control
