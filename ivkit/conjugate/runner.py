"""Running the probe on a base / tuned pair under several transforms, remembering every run.

`conjugate` is the one call: it runs `run_probe` for every
(model, transform) and returns a `ConjugateResult`. With
``out=DIR`` each run is stored as ``DIR/runs/<label>__<transform>__<condition>__<key>.json`` as
soon as it finishes, and a rerun loads it instead of generating again. The key digests what the
outputs depend on: the model's identity, every prompt text and answer (so the items, the transform
and its lexicon), the condition and injected vector, the token budget, the batch size and the
engine. A model
given by name or path is loaded only if one of its runs is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.io import atomic_write_json
from ..models.loading import load_model
from ..models.model import IVModel
from ..vectors import InstructionVector
from .probe import Engine, ProbeItem, ProbeRun, make_record, render, run_probe
from .results import ConjugateResult
from .transforms import Transform

log = logging.getLogger(__name__)


class LazyModel:
    """A model loaded on first use. ``key`` names its weights for the run keys without loading
    them: an `IVModel`'s identity, or for a name or path, the name and (for a directory)
    the size and modification time of its weight files."""

    def __init__(self, model: IVModel | str | Path, label: str):
        self.label = label
        self._model = model if isinstance(model, IVModel) else None
        self._ref = model
        self.key = self._key()  # fixed now: it must not change once the model is loaded

    def _key(self) -> str:
        if self._model is not None:
            return json.dumps(self._model.identity(), sort_keys=True)
        p = Path(str(self._ref))
        if p.is_dir():
            files = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in p.glob("*.safetensors"))
            return json.dumps([str(p.resolve()), files])
        return str(self._ref)

    def get(self) -> IVModel:
        if self._model is None:
            log.info("loading %s (%s)", self.label, self._ref)
            self._model = load_model(self._ref)
        return self._model

    def release(self) -> None:
        """Drop a model this object loaded (to free memory between models)."""
        if not isinstance(self._ref, IVModel):
            self._model = None


def iv_digest(iv: InstructionVector | None) -> str | None:
    if iv is None:
        return None
    h = hashlib.sha256(iv.vector.float().numpy().tobytes())
    h.update(json.dumps([iv.layer, iv.scale, iv.injection, iv.heads]).encode())
    return h.hexdigest()[:16]


def run_key(model_key: str, items: Sequence[ProbeItem], transform: Transform, *, condition: str,
            iv: InstructionVector | None, max_new_tokens: int, batch_size: int, engine: str = "generate_ids") -> str:
    """The digest a stored run is matched by (see the module docstring)."""
    h = hashlib.sha256(json.dumps([model_key, condition, iv_digest(iv), max_new_tokens, batch_size, engine]).encode())
    for it in items:
        r = render(it, transform)
        h.update(json.dumps([it.task, it.index, r.prompt.text, r.answer, r.instruction_answers]).encode())
    return h.hexdigest()[:16]


def cached_run(out: Path | None, model: LazyModel, items: Sequence[ProbeItem], transform: Transform, *,
               condition: str = "plain", iv: InstructionVector | None = None, max_new_tokens: int = 10,
               batch_size: int = 16, engine: Engine = "generate_ids", progress: bool = True) -> ProbeRun:
    """A stored run if its key matches, else a new one (stored at once)."""
    key = run_key(model.key, items, transform, condition=condition, iv=iv, max_new_tokens=max_new_tokens,
                  batch_size=batch_size, engine=engine)
    path = None if out is None else Path(out) / "runs" / f"{model.label}__{transform.name}__{condition}__{key}.json"
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            log.info("loaded %s", path.name)
            run = ProbeRun.from_dict(stored["run"])
            if not all("exhausted" in r for r in stored["run"]["records"]):
                run = upgrade(run, model.get(), items, transform)
                atomic_write_json(path, {"key": key, "run": run.to_dict()})
            return run
    run = run_probe(model.get(), items, transform, label=model.label, iv=iv, condition=condition,
                    max_new_tokens=max_new_tokens, batch_size=batch_size, engine=engine, progress=progress)
    log.info("%r", run)
    if path is not None:
        atomic_write_json(path, {"key": key, "run": run.to_dict()})
    return run


def upgrade(run: ProbeRun, model: IVModel, items: Sequence[ProbeItem], transform: Transform) -> ProbeRun:
    """A run stored before records kept what scoring needs (the instruction answers, whether the
    budget was used up): those filled in from the items and the stored token ids, then scored."""
    rendered = {(it.task, it.index): render(it, transform) for it in items}
    records = tuple(make_record(model, rendered[(r.task, r.index)], transform, r.new_ids, r.prompt_tokens)
                    for r in run.records)
    return dataclasses.replace(run, records=records)


def conjugate(base: IVModel | str | Path, tuned: IVModel | str | Path | None, items: Sequence[ProbeItem],
              transforms: Sequence[Transform], *, out: str | Path | None = None, labels: tuple[str, str] = ("base", "tuned"),
              max_new_tokens: int = 10, batch_size: int = 16, engine: Engine = "generate_ids", seed: int = 0,
              n_boot: int = 2000, progress: bool = True, on_model_done: Callable[[LazyModel], Any] | None = None
              ) -> ConjugateResult:
    """Run the probe ``items`` on ``base`` (and ``tuned``) under every transform.

    Args:
        base, tuned: `IVModel` objects, or names/paths (loaded only when a run is missing).
        items: from `build_probe` or
            `load_probe_file`.
        transforms: `Transform` objects; ``none`` is added
            first if absent (the recovery compares with it).
        out: a directory to store and resume runs in (see the module docstring).
        labels: the models' labels in tables and file names.
        engine: ``generate_ids`` (the reference) or ``cached`` (see `probe`).
        seed, n_boot: the recovery bootstrap.
        on_model_done: called with each model once its runs are done (the CLI and study release
            it to free memory).
    """
    from .transforms import identity

    names = [t.name for t in transforms]
    if "none" not in names:
        transforms = [identity(), *transforms]
    runs = []
    pairs = [(base, labels[0])] + ([(tuned, labels[1])] if tuned is not None else [])
    for ref, label in pairs:
        lm = LazyModel(ref, label)
        for t in transforms:
            runs.append(cached_run(Path(out) if out is not None else None, lm, items, t, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, engine=engine, progress=progress))
        if on_model_done is not None:
            on_model_done(lm)
    info = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "engine": engine, "n_items": len(items),
            "seconds": {f"{r.model}/{r.transform}": round(r.seconds, 1) for r in runs}}
    return ConjugateResult(labels[0], labels[1] if tuned is not None else None, tuple(runs), seed, n_boot, info)
