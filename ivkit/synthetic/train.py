"""Pretraining on the mixture of priors and fine-tuning on the discrete prior, seeded and resumable.

Concepts
--------
* **Objective**: the mean squared error of every prediction of a prompt (0 to ``n_points - 1``
  examples), AdamW, gradient norm clipped to 1, linear warm-up then cosine decay to 10% of ``lr``
  (``schedule="cosine"``) or a constant rate after the warm-up (``schedule="constant"``).
* **Curriculum** (optional, two parts):

  - *points*: the prompts of step ``s`` have ``points_start + (n_points - points_start) * s /
    points_steps`` pairs (rounded) until ``points_steps``, then all ``n_points``. Short prompts
    cost less (every layer scales with the length), so early steps are cheaper; the trade-off is
    that long contexts (late positions) are trained on fewer steps.
  - *dimensions*: only the first ``1 + (dim - 1) * s // dims_steps`` coordinates of ``x`` and
    ``w`` are non-zero until ``dims_steps`` (the labels follow). Without it a small model sits on
    the zero predictor's loss for thousands of steps at ``dim = 4``; with it, it learns one
    dimension at a time. The trade-off: during the curriculum the discrete prior is the discrete
    set's projection on the active coordinates, so the model sees the true discrete set only
    after ``dims_steps``.

  ``points_steps=0`` and ``dims_steps=0`` turn them off.
* **Checkpoints**: ``OUT/checkpoint-<step>/`` holds ``model.safetensors`` (the weights),
  ``optimizer.safetensors`` (AdamW's moments) and ``state.json`` (the settings, the step, the
  losses, the seconds spent). The folder is written under a temporary name and renamed when
  complete, so a folder without ``state.json`` never exists under the final name.
* **Seeded and resumable**: the batch of step ``s`` depends only on the seed, the phase and
  ``s``, the learning rate only on ``s``, and the optimizer's state is saved, so a run continued
  from any checkpoint ends with the weights of the uninterrupted run. A run whose final
  checkpoint exists returns at once (pretraining is not repeated by later fine-tuning or
  analysis). A directory holding a run with other settings is refused, not overwritten.
* **Fine-tuning** starts from a pretrained checkpoint's weights with a fresh optimizer and draws
  prompts from the discrete prior only; its ``state.json`` records the digest of the weights it
  started from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from ..core.errors import ArtifactError, InputError
from ..core.io import atomic_save_safetensors, atomic_write_json, file_sha256, progress_bar
from ..core.options import check_at_least, check_choice, check_finite, shown
from .data import Prior, RegressionTask, discrete_set, sample_prompts, seeded_generator
from .model import ModelConfig, RegressionGPT2

log = logging.getLogger(__name__)

Phase = Literal["pretrain", "finetune"]
Schedule = Literal["cosine", "constant"]
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training phase.

    Attributes:
        steps: optimizer steps.
        batch_size: prompts per step.
        lr: peak learning rate.
        warmup: steps of linear warm-up.
        schedule: ``cosine`` (decay to 10% of ``lr``) or ``constant``.
        weight_decay: AdamW's decoupled weight decay.
        seed: seeds the batches (and, for pretraining, the initial weights).
        points_start: pairs per prompt at step 0 (see the module docstring).
        points_steps: steps until prompts have all ``n_points`` pairs; 0: no points curriculum.
        dims_steps: steps until all ``dim`` coordinates are active; 0: no dimension curriculum.
        save_every: a checkpoint every this many steps (and at the end).
    """

    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    schedule: Schedule = "cosine"
    weight_decay: float = 0.0
    seed: int = 0
    points_start: int = 11
    points_steps: int = 3000
    dims_steps: int = 1200
    save_every: int = 500

    def __post_init__(self) -> None:
        check_at_least("steps", self.steps, 1)
        check_at_least("batch_size", self.batch_size, 1)
        check_at_least("warmup", self.warmup, 0)
        check_at_least("seed", self.seed, 0)
        check_at_least("points_start", self.points_start, 1)
        check_at_least("points_steps", self.points_steps, 0)
        check_at_least("dims_steps", self.dims_steps, 0)
        check_at_least("save_every", self.save_every, 1)
        check_choice("schedule", self.schedule, Schedule)
        (lr,) = check_finite("lr", (self.lr,))
        (wd,) = check_finite("weight_decay", (self.weight_decay,))
        if lr <= 0 or wd < 0:
            raise InputError(f"{shown('lr')} must be positive and weight_decay non-negative, got lr={lr}, weight_decay={wd}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lr_at(self, step: int) -> float:
        """The learning rate of (1-based) step ``step``."""
        if self.warmup and step <= self.warmup:
            return self.lr * step / self.warmup
        if self.schedule == "constant":
            return self.lr
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def points_at(self, step: int, n_points: int) -> int:
        """Pairs per prompt at (1-based) step ``step`` for prompts of at most ``n_points``."""
        start = min(self.points_start, n_points)
        if self.points_steps == 0 or step >= self.points_steps:
            return n_points
        return int(round(start + (n_points - start) * step / self.points_steps))

    def dims_at(self, step: int, dim: int) -> int:
        """Active coordinates at (1-based) step ``step`` for inputs of dimension ``dim``."""
        if self.dims_steps == 0 or step >= self.dims_steps:
            return dim
        return min(dim, 1 + (dim - 1) * step // self.dims_steps)


@dataclass(frozen=True)
class TrainRun:
    """A finished (or resumed-and-finished) training phase.

    Attributes:
        out: the run directory.
        phase: ``pretrain`` or ``finetune``.
        checkpoints: the ``checkpoint-<step>`` folders, in step order.
        losses: ``[(step, training loss)]`` of every step (resumed runs include the earlier ones).
        seconds: time spent training, over every session that contributed.
        skipped: True when the final checkpoint existed and nothing was trained.
    """

    out: Path
    phase: str
    checkpoints: list[Path]
    losses: list[tuple[int, float]] = field(repr=False)
    seconds: float
    skipped: bool

    @property
    def final(self) -> Path:
        """The last checkpoint folder."""
        return self.checkpoints[-1]

    def load(self) -> RegressionGPT2:
        """The network of the final checkpoint."""
        return load_checkpoint(self.final)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.losses, columns=["step", "loss"])

    def plot(self):
        from ..core.plots import profile_lines

        frame = self.to_pandas().assign(phase=self.phase)
        window = max(1, len(frame) // 50)
        frame["loss"] = frame["loss"].rolling(window, min_periods=1).mean()
        return profile_lines(frame, x="step", y="loss", line="phase", title=f"{self.phase}: training loss "
                             f"(running mean over {window} steps)", x_title="step", y_title="MSE")

    def __repr__(self) -> str:
        tail = self.losses[-max(1, len(self.losses) // 20):]
        last = sum(v for _, v in tail) / len(tail) if tail else float("nan")
        return (f"TrainRun({self.phase}, {str(self.out)!r}, {len(self.checkpoints)} checkpoints, {len(self.losses)} steps, "
                f"final loss ~{last:.3f}, {self.seconds:.0f} s{', skipped' if self.skipped else ''})")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def checkpoints(out: Path) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders of ``out``, in step order."""
    out = Path(out)
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def read_state(path: Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder."""
    f = Path(path) / STATE_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a checkpoint: it has no {STATE_FILE}") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{f} is not valid JSON (line {e.lineno}): delete the checkpoint folder") from None


def load_checkpoint(path: str | Path) -> RegressionGPT2:
    """The network saved in a checkpoint folder (weights from safetensors, settings from JSON)."""
    path = Path(path)
    state = read_state(path)
    net = RegressionGPT2(ModelConfig(**state["model"]))
    try:
        net.load_state_dict(load_file(path / MODEL_FILE), strict=True)
    except (FileNotFoundError, RuntimeError) as e:
        raise ArtifactError(f"{path / MODEL_FILE} is missing or does not fit the model ({e}). A checkpoint saved "
                            f"before the one-position-per-example layout does not load: train it again") from None
    return net.eval()


def _save(out: Path, step: int, net: RegressionGPT2, opt: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.", suffix=".tmp", dir=out))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700 folders; give the usual permissions
    try:
        atomic_save_safetensors(tmp / MODEL_FILE, dict(net.state_dict()))
        moments = {f"{i}.{k}": v for i, s in opt.state_dict()["state"].items() for k, v in s.items()}
        atomic_save_safetensors(tmp / OPTIMIZER_FILE, moments)
        atomic_write_json(tmp / STATE_FILE, state)
        final = out / f"checkpoint-{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    flat = load_file(path / OPTIMIZER_FILE)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _settings(phase: str, task: RegressionTask, model: ModelConfig, cfg: TrainConfig, init: str | None) -> dict[str, Any]:
    return {"phase": phase, "task": task.to_dict(), "model": model.to_dict(), "train": cfg.to_dict(), "init": init}


def _resume_point(out: Path, settings: dict[str, Any]) -> Path | None:
    found = checkpoints(out)
    if not found:
        return None
    state = read_state(found[-1])
    old = {k: state.get(k) for k in settings}
    if old != settings:
        diff = sorted(k for k in settings if old[k] != settings[k])
        raise InputError(f"{out} holds a {state.get('phase')} run with other settings ({', '.join(diff)} differ): "
                         f"pass another output directory, or delete {out} to start afresh")
    return found[-1]


def train(out: str | Path, phase: Phase, task: RegressionTask, model: ModelConfig, config: TrainConfig, *,
          init: str | Path | None = None, progress: bool = True) -> TrainRun:
    """Train one phase into ``out`` (resuming from its newest checkpoint); see the module docstring.

    Args:
        phase: ``pretrain`` (mixture prior, weights initialised from ``config.seed``) or
            ``finetune`` (discrete prior, weights from the checkpoint folder ``init``).
        model: the network's size; for fine-tuning it must match ``init``'s.
    """
    check_choice("phase", phase, Phase)
    out = Path(out)
    if model.dim != task.dim or model.n_points < task.n_points:
        raise InputError(f"the model reads dim {model.dim} and up to {model.n_points} pairs; the task has dim "
                         f"{task.dim} and {task.n_points} pairs")
    init_path, init_digest = _init_source(phase, init)
    settings = _settings(phase, task, model, config, init_digest)
    start = _resume_point(out, settings)
    if start:
        net = load_checkpoint(start)
    else:
        net = load_checkpoint(init_path) if init_path else RegressionGPT2(model, seed=config.seed)
    if net.settings != model:
        raise InputError(f"{init_path} holds a model of size {net.settings}, not {model}")
    state = read_state(start) if start else {**settings, "step": 0, "losses": [], "seconds": 0.0}
    if state["step"] >= config.steps:
        return _result(out, phase, state, skipped=True)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if start:
        _load_optimizer(opt, start)
    _loop(net, opt, out, phase, task, config, state, progress)
    return _result(out, phase, state, skipped=False)


def _init_source(phase: str, init: str | Path | None) -> tuple[Path | None, str | None]:
    if phase == "pretrain":
        if init is not None:
            raise InputError("pretraining starts from random weights: do not pass init")
        return None, None
    if init is None:
        raise InputError("fine-tuning needs init=<a pretrained checkpoint folder>")
    path = Path(init)
    if not (path / MODEL_FILE).is_file():
        raise ArtifactError(f"{path} is not a checkpoint folder (no {MODEL_FILE}): pass OUT/checkpoint-<step> of a "
                            f"pretraining run")
    return path, file_sha256(path / MODEL_FILE)[:16]


def _loop(net: RegressionGPT2, opt: torch.optim.Optimizer, out: Path, phase: str, task: RegressionTask,
          cfg: TrainConfig, state: dict[str, Any], progress: bool) -> None:
    prior: Prior = "mixture" if phase == "pretrain" else "discrete"
    table = discrete_set(task)
    net.train()
    t0, done = time.perf_counter(), state["seconds"]
    bar = progress_bar(range(state["step"] + 1, cfg.steps + 1), progress=progress, desc=phase)
    for step in bar:
        gen = seeded_generator("train", phase, cfg.seed, step)
        batch = sample_prompts(task.with_points(cfg.points_at(step, task.n_points)), cfg.batch_size, prior, gen,
                               discrete=table, active_dims=cfg.dims_at(step, task.dim))
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        loss = ((net(batch.xs, batch.ys) - batch.ys) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        state["losses"].append([step, loss.detach().item()])
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(v for _, v in state['losses'][-50:]) / 50:.3f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            state.update(step=step, seconds=done + time.perf_counter() - t0)
            _save(out, step, net, opt, state)
    net.eval()


def _result(out: Path, phase: str, state: dict[str, Any], *, skipped: bool) -> TrainRun:
    losses = [(int(s), float(v)) for s, v in state["losses"]]
    return TrainRun(out, phase, checkpoints(out), losses, float(state["seconds"]), skipped)


def pretrain(out: str | Path, task: RegressionTask | None = None, model: ModelConfig | None = None,
             config: TrainConfig | None = None, *, progress: bool = True) -> TrainRun:
    """Pretrain on the mixture of the two priors (`train` with ``phase="pretrain"``)."""
    task = task or RegressionTask()
    model = model or ModelConfig(dim=task.dim, n_points=task.n_points)
    return train(out, "pretrain", task, model, config or TrainConfig(), progress=progress)


#: The fine-tuning default: 500 steps at a constant 1e-3 after 20 warm-up steps, no curriculum.
FINETUNE_DEFAULT = TrainConfig(steps=500, lr=1e-3, warmup=20, schedule="constant", points_steps=0, dims_steps=0,
                               save_every=100)


def finetune(out: str | Path, init: str | Path, task: RegressionTask | None = None, config: TrainConfig | None = None,
             *, progress: bool = True) -> TrainRun:
    """Fine-tune the network of checkpoint folder ``init`` on the discrete prior only (`train`
    with ``phase="finetune"``), by default with `FINETUNE_DEFAULT`. ``task`` defaults to the
    pretraining task (read from ``init``); another task must have the same discrete set (``dim``,
    ``tau``, ``n_discrete``, ``discrete_seed``)."""
    init = Path(init)
    if not (init / STATE_FILE).is_file():
        raise ArtifactError(f"{init} is not a checkpoint folder (no {STATE_FILE}): pass OUT/checkpoint-<step> of a "
                            f"pretraining run")
    state = read_state(init)
    base = RegressionTask.from_dict(state["task"])
    task = task or base
    differ = [k for k in ("dim", "tau", "n_discrete", "discrete_seed") if getattr(task, k) != getattr(base, k)]
    if differ:
        raise InputError(f"the task's discrete set differs from the one {init} was pretrained with ({', '.join(differ)} "
                         f"differ): fine-tuning on another discrete set is not the set-up; leave task unset")
    config = config or FINETUNE_DEFAULT
    return train(out, "finetune", task, ModelConfig(**state["model"]), config, init=init, progress=progress)
