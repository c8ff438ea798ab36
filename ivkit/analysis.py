"""Tracking instruction vectors and task accuracy across checkpoints.

Concepts
--------
Jiang et al. (seed 002) claim that fine-tuning leaves a task's IV largely in place but stops the
model from *activating* it. :func:`track` measures both sides on a :class:`CheckpointSeries`, for
one or more tasks, relative to the series' first checkpoint (the *reference*):

* **accuracy**: zero-shot, clean few-shot, and zero-shot plus the *reference* IV (at its layer and
  scale) on the task's test queries;
* **IV similarity**: the cosine between this checkpoint's IV and the reference IV. In
  ``mode="fixed"`` the IV reuses the reference heads and recomputes their mean outputs on this
  checkpoint (same clean prompts); in ``mode="rerank"`` the heads are re-ranked by AIE on this
  checkpoint (same corrupted prompts), and the top-k Jaccard overlap and the Spearman correlation
  of the AIE with the reference's are reported too;
* **alignment**: per layer, the mean cosine between the last-token residual stream (after each
  block) of zero-shot and of few-shot prompts and the reference IV. Does the model still move
  towards the IV when it sees the task?

Each (checkpoint, task) result is written to ``out/<checkpoint>/<task>.json`` as soon as it
exists, and the reference IV and prompts to ``out/reference/<task>/``, so an interrupted sweep
resumes where it stopped and gives the same table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoints import Checkpoint, CheckpointError, CheckpointSeries
from .errors import InputError, IVKitError, TaskError
from .evaluate import evaluate_iv, evaluation_prompts
from .extract import extract, prepare_prompts
from .hooks import record_residual
from .io import atomic_write_text, json_safe
from .mediation import IndirectEffects, indirect_effects, mean_head_activations, rank_agreement
from .models import IVModel, length_batches
from .tasks import EncodedPrompts, Task, encode_prompts, load_task, prompts_from_json, prompts_to_json
from .vectors import InstructionVector

log = logging.getLogger(__name__)

MODES = ("fixed", "rerank")


@dataclass
class _Reference:
    iv: InstructionVector
    mean_prompts: list
    corrupted_prompts: list
    aie: torch.Tensor
    seconds: float = 0.0


@dataclass
class Tracking:
    """What :func:`track` measured.

    Attributes:
        records: one dict per (checkpoint, task): ``checkpoint, step, task, fingerprint, zero_shot,
            few_shot, zero_shot_iv, iv_cosine, iv_cosine_fixed_heads, head_jaccard, aie_spearman,
            alignment_zero_shot, alignment_few_shot`` (the last two: one cosine per layer), ``aie``
            (rerank mode). ``iv_cosine`` compares the IV built on the checkpoint (the reference's
            heads in fixed mode, its own top-k in rerank mode) with the reference IV;
            ``iv_cosine_fixed_heads`` always uses the reference's heads.
        mode: ``"fixed"`` or ``"rerank"``.
        references: task -> the reference :class:`InstructionVector`.
        reference_seconds: task -> seconds its reference extraction took.
    """

    records: list[dict[str, Any]]
    mode: str
    references: dict[str, InstructionVector] = field(default_factory=dict)
    reference_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Compute time of the whole sweep (reference extractions and every measurement), summed
        from what each piece recorded when it ran, so a resumed sweep reports the original cost."""
        return sum(self.reference_seconds.values()) + sum(r.get("seconds") or 0.0 for r in self.records)

    SCALARS = ("checkpoint", "step", "task", "fingerprint", "zero_shot", "few_shot", "zero_shot_iv", "iv_cosine",
               "iv_cosine_fixed_heads", "head_jaccard", "aie_spearman", "peak_alignment_zero_shot", "peak_alignment_few_shot")

    def to_pandas(self):
        """The tidy table: one row per (checkpoint, task), scalar columns only."""
        import pandas as pd

        rows = []
        for r in self.records:
            row = {k: r.get(k) for k in self.SCALARS if k not in ("peak_alignment_zero_shot", "peak_alignment_few_shot")}
            row["peak_alignment_zero_shot"] = max(r["alignment_zero_shot"])
            row["peak_alignment_few_shot"] = max(r["alignment_few_shot"])
            rows.append(row)
        return pd.DataFrame(rows)

    def alignment(self):
        """Long table of the layer profiles: ``checkpoint, task, prompts, layer, cosine``."""
        import pandas as pd

        rows = [{"checkpoint": r["checkpoint"], "task": r["task"], "prompts": style, "layer": l, "cosine": c}
                for r in self.records for style in ("zero_shot", "few_shot")
                for l, c in enumerate(r[f"alignment_{style}"])]
        return pd.DataFrame(rows)

    def save(self, out: str | Path) -> None:
        """``tracking.csv``, ``tracking.json`` and the plots as HTML into ``out``."""
        from .plotting import to_html

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "tracking.csv", self.to_pandas().to_csv(index=False))
        atomic_write_text(out / "tracking.json", json.dumps({"mode": self.mode, "records": self.records}, indent=1))
        to_html(self.plot(), out / "tracking.html")
        for task in sorted({r["task"] for r in self.records}):
            to_html(self.plot_alignment(task), out / f"alignment_{task}.html")
            if self.mode == "rerank":
                to_html(self.plot_heads(task), out / f"heads_{task}.html")

    def plot(self):
        from .plotting import plot_tracking

        return plot_tracking(self)

    def plot_alignment(self, task: str):
        from .plotting import plot_alignment

        return plot_alignment(self, task)

    def plot_heads(self, task: str):
        from .plotting import plot_heads_over_checkpoints

        return plot_heads_over_checkpoints(self, task)


def _alignment(model: IVModel, prompts: EncodedPrompts, vector: torch.Tensor, batch_size: int = 16) -> list[float]:
    """Per layer, the mean cosine between the last-token block output and ``vector``."""
    g = model.geometry
    sums = torch.zeros(g.n_layers, dtype=torch.float64)
    v = vector.double()
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in prompts.input_ids], batch_size):
            with record_residual(model) as res:
                model.forward(model.make_batch([prompts.input_ids[i] for i in idx]))
            for l in range(g.n_layers):
                sums[l] += torch.nn.functional.cosine_similarity(res[l].double().cpu(), v[None], dim=-1).sum()
    return (sums / len(prompts)).tolist()


def _jaccard(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> float:
    sa, sb = set(map(tuple, a)), set(map(tuple, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def track(
    series: CheckpointSeries | Sequence[str | Path],
    tasks: Sequence[Task | str] | Task | str,
    *,
    mode: str = "fixed",
    references: dict[str, InstructionVector] | None = None,
    out: str | Path | None = None,
    n_prompts: int = 100,
    alignment_prompts: int = 50,
    shots: int = 10,
    mean_prompts: int = 100,
    trials: int = 25,
    top_k: int = 10,
    seed: int = 0,
    method: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    **extract_options: Any,
) -> Tracking:
    """Track accuracy, IV similarity and alignment over a series of checkpoints.

    Args:
        series: a :class:`CheckpointSeries`, or checkpoint paths (``from_dirs``).
        tasks: task names, files or :class:`Task` objects.
        mode: ``"fixed"`` (reference heads, means recomputed) or ``"rerank"`` (AIE per checkpoint).
        references: task -> IV to compare against; by default extracted on the first checkpoint.
        out: directory for per-checkpoint results; an interrupted run resumes from it.
        n_prompts: test queries per accuracy.
        alignment_prompts: zero-shot and few-shot prompts per alignment profile.
        shots, mean_prompts, trials, top_k, seed, method: as in :func:`ivkit.extract`.

    Returns:
        :class:`Tracking`.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(series, CheckpointSeries):
        series = CheckpointSeries.from_dirs(list(series))
    task_list = [load_task(t) for t in ([tasks] if isinstance(tasks, (str, Task)) else tasks)]
    if not task_list:
        raise TaskError("track needs at least one task")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        _check_resume(out_dir, series, task_list, dict(
            mode=mode, n_prompts=n_prompts, alignment_prompts=alignment_prompts, shots=shots,
            mean_prompts=mean_prompts, trials=trials, top_k=top_k, seed=seed, method=method,
            extract_options=extract_options, given_references=sorted(references or {})))
    refs: dict[str, _Reference] = {}
    records: list[dict[str, Any]] = []

    def saved(ck: Checkpoint, t: Task) -> Path | None:
        path = out_dir / ck.label / f"{t.name}.json" if out_dir is not None else None
        return path if path is not None and path.exists() else None

    # Tasks with work left anywhere need their reference, which is always made on the first checkpoint.
    need_ref = [t for t in task_list if any(saved(ck, t) is None for ck in series.checkpoints)]
    for i, ck in enumerate(series.checkpoints):
        todo = [t for t in task_list if saved(ck, t) is None]
        if not todo and not (i == 0 and need_ref):
            for t in task_list:
                records.append(json.loads(saved(ck, t).read_text()))
            log.info("checkpoint %s: all tasks already measured in %s", ck.label, out_dir)
            continue
        model = series.load(i)
        try:
            if i == 0:
                for t in need_ref:
                    refs[t.name] = _reference(model, t, out_dir, (references or {}).get(t.name), shots=shots,
                                              mean_prompts=mean_prompts, trials=trials, top_k=top_k, seed=seed,
                                              method=method, batch_size=batch_size, progress=progress,
                                              **extract_options)
            for t in task_list:
                path = saved(ck, t)
                if path is not None:
                    rec = json.loads(path.read_text())
                    if rec.get("fingerprint") != series.fingerprints[ck.label]:
                        raise CheckpointError(
                            f"{path} was measured on other weights than checkpoint {ck.label!r} has now "
                            f"(fingerprint {rec.get('fingerprint')} vs {series.fingerprints[ck.label]}): the "
                            f"checkpoint changed since. Choose a new out directory")
                    records.append(rec)
                    continue
                path = out_dir / ck.label / f"{t.name}.json" if out_dir is not None else None
                t0 = time.perf_counter()
                rec = _measure(model, ck, series.fingerprints[ck.label], t, refs[t.name], mode=mode,
                               n_prompts=n_prompts, alignment_prompts=alignment_prompts, shots=shots, seed=seed,
                               top_k=top_k, method=method, batch_size=batch_size, progress=progress)
                rec["seconds"] = round(time.perf_counter() - t0, 2)
                if path is not None:
                    atomic_write_text(path, json.dumps(rec, indent=1))
                records.append(rec)
        finally:
            del model
    order = {l: n for n, l in enumerate(series.labels)}
    tnames = [t.name for t in task_list]
    records.sort(key=lambda r: (order[r["checkpoint"]], tnames.index(r["task"])))
    return Tracking(records, mode, {k: v.iv for k, v in refs.items()},
                    {k: v.seconds for k, v in refs.items()})


def _check_resume(out_dir: Path, series: CheckpointSeries, tasks: Sequence[Task], settings: dict[str, Any]) -> None:
    """Refuse to resume a sweep in ``out_dir`` that was run with other settings, other task files
    or other checkpoints under the same labels; record this run's settings (``settings.json``)."""
    path = out_dir / "settings.json"
    current = {"settings": json.loads(json.dumps(settings, default=str)),
               "tasks": {t.name: str(t.source) for t in tasks},
               "checkpoints": {ck.label: str(ck.source) for ck in series.checkpoints},
               "first": series.checkpoints[0].label}
    measured = any(p.name != "settings.json" for p in out_dir.rglob("*.json")) if out_dir.exists() else False
    if path.exists() and measured:  # (an attempt that measured nothing, e.g. a failed reference, binds nothing)
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise IVKitError(f"{path} is not valid JSON ({e}); choose a new out directory") from None
        if not isinstance(old, dict):
            raise IVKitError(f"{path} is not a settings file ivkit wrote; choose a new out directory")
        before = old.get("settings") or {}
        problems = [f"{k}: {before.get(k)!r} then, {v!r} now" for k, v in current["settings"].items()
                    if before.get(k) != v]
        if old.get("first") != current["first"]:
            problems.append(f"the reference checkpoint: {old.get('first')!r} then, {current['first']!r} now")
        for kind in ("tasks", "checkpoints"):
            seen = old.get(kind) or {}
            problems += [f"{kind[:-1]} {name!r}: {seen[name]!r} then, {src!r} now"
                         for name, src in current[kind].items() if name in seen and seen[name] != src]
        if problems:
            raise IVKitError(f"{out_dir} holds a sweep made with other settings ({'; '.join(problems)}). Resume it "
                             f"with the same ones, or choose a new out directory")
        current["tasks"] = {**(old.get("tasks") or {}), **current["tasks"]}
        current["checkpoints"] = {**(old.get("checkpoints") or {}), **current["checkpoints"]}
    atomic_write_text(path, json.dumps(current, indent=1))


def _reference(model: IVModel, task: Task, out_dir: Path | None, given: InstructionVector | None, *,
               shots: int, mean_prompts: int, trials: int, top_k: int, seed: int, method: str, batch_size: int,
               progress: bool, **extract_options: Any) -> _Reference:
    """The reference IV and the prompts every checkpoint is measured with (saved for resuming)."""
    ref_dir = out_dir / "reference" / task.name if out_dir else None
    if ref_dir is not None and (ref_dir / "prompts.json").exists():
        saved = json.loads((ref_dir / "prompts.json").read_text())
        iv = InstructionVector.load(ref_dir, model=model)
        return _Reference(iv, prompts_from_json(saved["mean"]), prompts_from_json(saved["corrupted"]),
                          torch.tensor(saved["aie"]), float(saved.get("seconds", 0.0)))
    t0 = time.perf_counter()
    if given is not None:
        given.check_compatible(model)
        p = prepare_prompts(model, task, shots=shots, mean_prompts=mean_prompts, trials=trials, seed=seed,
                            batch_size=batch_size, progress=progress)
        means = given.mean_activations
        if means is None:
            means = mean_head_activations(model, p.mean, batch_size=batch_size, progress=progress)
        ie = indirect_effects(model, p.corrupted, means, method=method, progress=progress)
        iv, mean_p, corr_p, aie = given, p.mean.prompts, p.corrupted.prompts, ie.aie
    else:
        res = extract(model, task, shots=shots, mean_prompts=mean_prompts, trials=trials, top_k=top_k, seed=seed,
                      method=method, batch_size=batch_size, progress=progress, **extract_options)
        iv, aie = res.iv, res.effects.aie
        mean_p, corr_p = res.prompts.mean.prompts, res.prompts.corrupted.prompts
    seconds = round(time.perf_counter() - t0, 2)
    if ref_dir is not None:
        iv.save(ref_dir)
        atomic_write_text(ref_dir / "prompts.json", json.dumps(
            {"mean": prompts_to_json(mean_p), "corrupted": prompts_to_json(corr_p), "aie": aie.tolist(),
             "seconds": seconds}))
    return _Reference(iv, mean_p, corr_p, aie, seconds)


def _measure(model: IVModel, ck: Checkpoint, fp: str, task: Task, ref: _Reference, *, mode: str, n_prompts: int,
             alignment_prompts: int, shots: int, seed: int, top_k: int, method: str, batch_size: int,
             progress: bool) -> dict[str, Any]:
    ev = evaluate_iv(model, task, ref.iv, n_prompts=n_prompts, shots=shots, seed=seed, batch_size=batch_size,
                     progress=False, conditions=("zero_shot", "zero_shot_iv", "few_shot"))
    means = mean_head_activations(model, encode_prompts(model, ref.mean_prompts), batch_size=batch_size,
                                  progress=progress)
    rec: dict[str, Any] = {"checkpoint": ck.label, "step": ck.step, "task": task.name, "fingerprint": fp,
                           "zero_shot": ev["zero_shot"], "few_shot": ev["few_shot"], "zero_shot_iv": ev["zero_shot_iv"],
                           "mode": mode}
    post_norm = ref.iv.meta.get("post_norm") or "linearized"
    fixed = InstructionVector.build(model, means, heads=ref.iv.heads, post_norm=post_norm)
    rec["iv_cosine_fixed_heads"] = fixed.cosine(ref.iv)
    if mode == "fixed":
        iv = fixed
        rec.update(head_jaccard=None, aie_spearman=None, aie=None)
    else:
        ie = indirect_effects(model, encode_prompts(model, ref.corrupted_prompts), means, method=method,
                              progress=progress)
        iv = InstructionVector.build(model, means, ie, k=ref.iv.k, post_norm=post_norm)
        agree = rank_agreement(ref.aie, ie.aie, k=ref.iv.k)
        rec.update(head_jaccard=_jaccard(iv.heads, ref.iv.heads), aie_spearman=agree["spearman"], aie=ie.aie.tolist(),
                   heads=[list(h) for h in iv.heads])
    rec["iv_cosine"] = iv.cosine(ref.iv)
    rec["iv_norm"] = iv.norm
    sets = evaluation_prompts(model, task, n_prompts=alignment_prompts, shots=shots, seed=seed)
    rec["alignment_zero_shot"] = _alignment(model, sets["zero_shot"], ref.iv.vector, batch_size)
    rec["alignment_few_shot"] = _alignment(model, sets["few_shot"], ref.iv.vector, batch_size)
    return {k: json_safe(v) for k, v in rec.items()}
