"""Series of checkpoints of one model, loaded one at a time.

Concepts
--------
A `CheckpointSeries` is an ordered list of checkpoints of the *same architecture*:

* local directories in Hugging Face format (``CheckpointSeries.from_dirs``);
* a training run's ``checkpoint-*`` folders, ordered by step (``from_trainer_dir``);
* revisions of a hub repository, e.g. Pythia's ``step*`` branches (``from_hub``; needs the hub);
* a base model plus LoRA adapters (``from_lora``; needs ``peft``).

Iterating loads each checkpoint, yields it, and drops it before loading the next, so memory
stays at one model. Each loaded checkpoint gets a **fingerprint** (a hash of its weights), so a
series that repeats a checkpoint, or whose labels point at the same weights, is caught; a
checkpoint of another architecture is an error, not a silent comparison.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..core.errors import IVKitError, ModelLoadError
from .loading import load_model
from .model import IVModel

log = logging.getLogger(__name__)


class CheckpointError(IVKitError):
    """A checkpoint series is empty, has missing members, or mixes architectures."""


@dataclass
class Checkpoint:
    """One member of a series: a label and how to load it."""

    label: str
    load: Callable[[], IVModel] = field(repr=False)
    source: str = ""
    step: int | None = None


def release(model: IVModel) -> None:
    """Free a model's weights now, whoever still refers to it: its parameters and buffers move to
    the ``meta`` device (shapes kept, storage freed). The model cannot run afterwards."""
    model.model.to("meta")


def fingerprint(model: IVModel) -> str:
    """A short hash of every parameter's bytes (names, shapes and values)."""
    h = hashlib.sha256()
    for name, p in sorted(model.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _architecture(model: IVModel) -> dict[str, Any]:
    return {"model_type": model.model_type, **model.geometry.to_dict()}


def _step_of(path: Path) -> int | None:
    m = re.search(r"(\d+)$", path.name)
    return int(m.group(1)) if m else None


class CheckpointSeries:
    """An ordered series of checkpoints of one architecture (see the module docstring).

    Attributes:
        checkpoints: the members, in order.
        fingerprints: label -> weight hash, filled as checkpoints are loaded.
    """

    def __init__(self, checkpoints: Sequence[Checkpoint], *, allow_duplicates: bool = False):
        if not checkpoints:
            raise CheckpointError("the checkpoint series is empty: give at least one checkpoint")
        labels = [c.label for c in checkpoints]
        dup = sorted({l for l in labels if labels.count(l) > 1})
        if dup:
            raise CheckpointError(f"checkpoint labels repeat: {dup}; give each checkpoint its own label")
        self.checkpoints = list(checkpoints)
        self.allow_duplicates = allow_duplicates
        self.fingerprints: dict[str, str] = {}
        self.architecture: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.checkpoints)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.checkpoints]

    def __repr__(self) -> str:
        return f"CheckpointSeries({self.labels})"

    # ---- constructors ---------------------------------------------------------------------

    @classmethod
    def from_dirs(cls, dirs: Sequence[str | Path], labels: Sequence[str] | None = None, **kw: Any) -> "CheckpointSeries":
        """Local Hugging Face directories (or ``.gguf`` files, or aliases), in the given order."""
        items = []
        for i, d in enumerate(dirs):
            ref = str(d)
            p = Path(ref).expanduser()
            is_path = p.exists() or ref.startswith((".", "/", "~")) or ref.endswith(".gguf")
            if is_path and not p.exists():
                raise CheckpointError(f"checkpoint {ref!r} does not exist; check the path")
            if p.is_dir() and not (p / "config.json").exists():
                raise CheckpointError(f"{p} has no config.json: not a Hugging Face checkpoint directory")
            label = labels[i] if labels else (p.name if is_path else ref)
            items.append(Checkpoint(label, (lambda r=ref: load_model(r)), ref, _step_of(p) if is_path else None))
        return cls(items, **kw)

    @classmethod
    def from_trainer_dir(cls, run_dir: str | Path, *, include_base: str | Path | None = None,
                         **kw: Any) -> "CheckpointSeries":
        """The ``checkpoint-<step>`` folders of a training run, ordered by step. ``include_base``
        puts the model the run started from first (labelled ``base``)."""
        run = Path(run_dir).expanduser()
        if not run.is_dir():
            raise CheckpointError(f"no such run directory: {run}")
        found = sorted((p for p in run.glob("checkpoint-*") if p.is_dir() and _step_of(p) is not None),
                       key=lambda p: _step_of(p))
        if not found:
            raise CheckpointError(f"{run} has no checkpoint-<step> folders")
        dirs: list[str | Path] = ([include_base] if include_base is not None else []) + found
        labels = (["base"] if include_base is not None else []) + [p.name for p in found]
        return cls.from_dirs(dirs, labels, **kw)

    @classmethod
    def from_hub(cls, repo: str, revisions: Sequence[str], *, allow_duplicates: bool = False,
                 **load_kwargs: Any) -> "CheckpointSeries":
        """Revisions (branches, tags, commits) of a hub repository, e.g. Pythia's ``step1000``
        branches; needs the hub or the revisions in the local Hugging Face cache.

        ``load_kwargs`` go to `load_model` (``cache_dir=...``, ``backend=...``, ...).
        The step is read from the end of each revision name (``step1000`` -> 1000)."""
        def loader(rev: str) -> Callable[[], IVModel]:
            def load() -> IVModel:
                try:
                    return load_model(repo, name=f"{repo}@{rev}", revision=rev, **load_kwargs)
                except ModelLoadError as e:
                    raise CheckpointError(f"revision {rev!r} of {repo}: {e}") from None
            return load
        return cls([Checkpoint(rev, loader(rev), f"{repo}@{rev}", _step_of(Path(rev))) for rev in revisions],
                   allow_duplicates=allow_duplicates)

    @classmethod
    def from_lora(cls, base: str | Path, adapters: Sequence[str | Path], *, include_base: bool = True,
                  **kw: Any) -> "CheckpointSeries":
        """A base model and LoRA adapters (``peft``), each adapter merged into a fresh base."""
        for a in adapters:
            if not Path(a).expanduser().exists():
                raise CheckpointError(f"adapter {a} does not exist")

        def loader(adapter: str | Path) -> Callable[[], IVModel]:
            def load() -> IVModel:
                try:
                    from peft import PeftModel
                except ImportError:
                    raise ModelLoadError("LoRA checkpoints need peft: pip install peft") from None
                ivm = load_model(base)
                merged = PeftModel.from_pretrained(ivm.model, str(adapter)).merge_and_unload()
                return IVModel(merged.eval(), ivm.tokenizer, name=f"{ivm.name}+{Path(adapter).name}")
            return load

        items = [Checkpoint("base", lambda: load_model(base), str(base), 0)] if include_base else []
        items += [Checkpoint(Path(a).name, loader(a), str(a), _step_of(Path(a))) for a in adapters]
        return cls(items, **kw)

    # ---- loading --------------------------------------------------------------------------

    def load(self, index: int) -> IVModel:
        """Load one checkpoint, fingerprint it and check it against the series."""
        ck = self.checkpoints[index]
        model = ck.load()
        arch = _architecture(model)
        if self.architecture is None:
            self.architecture = arch
        elif arch != self.architecture:
            diff = {k: (self.architecture.get(k), v) for k, v in arch.items() if self.architecture.get(k) != v}
            raise CheckpointError(
                f"checkpoint {ck.label!r} has another architecture than the series' first: {diff}. "
                f"A series compares checkpoints of one model")
        fp = fingerprint(model)
        same = [label for label, f in self.fingerprints.items() if f == fp and label != ck.label]
        if same:
            msg = (f"checkpoint {ck.label!r} has the same weights as {same[0]!r} (fingerprint {fp}); "
                   f"a checkpoint is repeated or mislabeled")
            if not self.allow_duplicates:
                raise CheckpointError(msg + "; pass allow_duplicates=True if that is intended")
            log.warning(msg)
        self.fingerprints[ck.label] = fp
        return model

    def __iter__(self) -> Iterator[tuple[Checkpoint, IVModel]]:
        """Yield ``(checkpoint, model)``, one model in memory at a time.

        Each model is valid during its own iteration only: before the next checkpoint loads, the
        previous model's weights are released (moved to the ``meta`` device), even if the caller
        still holds it, so that memory stays at one model. Keep results, not models; to keep a
        model, use `load`."""
        for i, ck in enumerate(self.checkpoints):
            model = self.load(i)
            try:
                yield ck, model
            finally:
                release(model)
                del model
                gc.collect()
