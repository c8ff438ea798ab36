"""Tracking instruction vectors and task accuracy across checkpoints.

Concepts
--------
Jiang et al. (seed 002) claim that fine-tuning leaves a task's IV largely in place but stops the
model from *activating* it. `track` measures both sides on a `CheckpointSeries`, for
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

import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..activations import mean_head_activations, residual_alignment
from ..core.errors import InputError, IVKitError, TaskError
from ..core.html import table
from ..core.io import atomic_write_json, atomic_write_text, json_safe
from ..core.options import TrackMode, check_choice
from ..core.plots import heatmap_slider, profile_lines, to_html, tracking_panels
from ..core.prompts import encode_prompts, prompts_from_json, prompts_to_json, sample_prompts
from ..core.stats import jaccard, rank_agreement, wilson_interval
from ..core.tasks import Task, load_task
from ..evaluation import evaluate_iv, evaluation_prompts, layer_sweep, score_prompts
from ..mediation import indirect_effects
from ..models.checkpoints import Checkpoint, CheckpointError, CheckpointSeries
from ..models.model import IVModel
from ..pipeline import ExtractConfig, extract
from ..pipeline.stages import RunContext, effects_stage, prompts_stage
from ..pipeline.store import StageStore
from ..vectors import InstructionVector

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Reference:
    iv: InstructionVector
    mean_prompts: list
    corrupted_prompts: list
    aie: torch.Tensor | None  # the reference's AIE; None when the sweep never re-ranks (fixed mode, given IV)
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class Tracking:
    """What `track` measured.

    Attributes:
        records: one dict per (checkpoint, task): ``checkpoint, step, task, fingerprint, zero_shot,
            few_shot, zero_shot_iv, iv_cosine, iv_cosine_fixed_heads, head_jaccard, aie_spearman,
            alignment_zero_shot, alignment_few_shot`` (the last two: one cosine per layer), ``aie``
            (rerank mode). ``iv_cosine`` compares the IV built on the checkpoint (the reference's
            heads in fixed mode, its own top-k in rerank mode) with the reference IV;
            ``iv_cosine_fixed_heads`` always uses the reference's heads.
        mode: ``"fixed"`` or ``"rerank"``.
        references: task -> the reference `InstructionVector`.
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

    def to_pandas(self):
        """The tidy table: one row per (checkpoint, task), the scalar measurements (accuracies with
        their intervals, cosines, ...) and the peak of each alignment profile (the seconds each
        measurement took are in `records`)."""
        import pandas as pd

        rows = []
        for r in self.records:
            row = {k: v for k, v in r.items() if not isinstance(v, (list, dict)) and k != "seconds"}
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
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "tracking.csv", self.to_pandas().to_csv(index=False))
        atomic_write_json(out / "tracking.json", {"mode": self.mode, "records": self.records})
        to_html(self.plot(), out / "tracking.html")
        for task in sorted({r["task"] for r in self.records}):
            to_html(self.plot_alignment(task), out / f"alignment_{task}.html")
            if self.mode == "rerank":
                to_html(self.plot_heads(task), out / f"heads_{task}.html")

    def plot(self):
        """IV similarity and accuracy over checkpoints, one line per task (two stacked panels)."""
        return tracking_panels(self.to_pandas(), title=f"Instruction vectors across checkpoints ({self.mode} heads)")

    def plot_alignment(self, task: str):
        """Layer profile of the cosine between the last-token residual stream and the reference IV,
        one line per checkpoint, for zero-shot (dotted) and few-shot (solid) prompts."""
        df = self.alignment()
        return profile_lines(df[df["task"] == task], x="layer", y="cosine", line="checkpoint", dash="prompts",
                             dashes={"zero_shot": "dot", "few_shot": "solid"},
                             title=f"{task}: cos(residual stream at the last token, reference IV)",
                             x_title="layer (block output)", y_title="cosine")

    def plot_heads(self, task: str):
        """AIE heatmap per checkpoint with a slider over checkpoints (``mode="rerank"`` only)."""
        frames = [(r["checkpoint"], r["aie"]) for r in self.records if r["task"] == task and r.get("aie") is not None]
        if not frames:
            raise InputError("per-checkpoint AIE exists only in mode='rerank'")
        return heatmap_slider(frames, title=f"{task}: AIE")

    def _repr_html_(self) -> str:
        keep = ["checkpoint", "task", "zero_shot", "few_shot", "zero_shot_iv", "iv_cosine", "peak_alignment_zero_shot"]
        df = self.to_pandas()
        return f"<b>{html.escape(repr(self))}</b>" + table(df[[c for c in keep if c in df]].to_dict("records"))

    def __repr__(self) -> str:
        tasks = sorted({r["task"] for r in self.records})
        labels = list(dict.fromkeys(r["checkpoint"] for r in self.records))
        return f"Tracking({self.mode}, {len(labels)} checkpoints x {len(tasks)} tasks: {', '.join(tasks)})"


def track(
    series: CheckpointSeries | Sequence[str | Path],
    tasks: Sequence[Task | str] | Task | str,
    *,
    mode: TrackMode = "fixed",
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
    resweep: bool = False,
    sweep_prompts: int = 100,
    foreign: Mapping[str, InstructionVector] | None = None,
    **extract_options: Any,
) -> Tracking:
    """Track accuracy, IV similarity and alignment over a series of checkpoints.

    Args:
        series: a `CheckpointSeries`, or checkpoint paths (``from_dirs``).
        tasks: task names, files or `Task` objects.
        mode: ``"fixed"`` (reference heads, means recomputed) or ``"rerank"`` (AIE per checkpoint).
        references: task -> IV to compare against; by default extracted on the first checkpoint.
        out: directory for per-checkpoint results; an interrupted run resumes from it.
        n_prompts: test queries per accuracy.
        alignment_prompts: zero-shot and few-shot prompts per alignment profile.
        shots: demonstrations per prompt, as in `ivkit.extract` (and ``mean_prompts``,
            ``trials``, ``top_k``, ``seed``, ``method``, and any other extract option).
        resweep: also choose, on each checkpoint, the injection layer and scale of the IV rebuilt
            from the reference's heads (``sweep_prompts`` validation queries), and score it on the
            test queries (``zero_shot_own_iv``): is the IV still there, only elsewhere?
        foreign: name -> another task's IV (e.g. the fine-tuning task's): the peak alignment of
            each task's zero-shot residual stream with it (``alignment_to/<name>``): does that IV
            take over?

    Returns:
        `Tracking`.
    """
    check_choice("mode", mode, TrackMode)
    if not isinstance(series, CheckpointSeries):
        series = CheckpointSeries.from_dirs(list(series))
    task_list = [load_task(t) for t in ([tasks] if isinstance(tasks, (str, Task)) else tasks)]
    if not task_list:
        raise TaskError("track needs at least one task")
    cfg = ExtractConfig.from_options(shots=shots, mean_prompts=mean_prompts, trials=trials, top_k=top_k, seed=seed,
                                     method=method, batch_size=batch_size, **extract_options)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        settings = dict(mode=mode, n_prompts=n_prompts, alignment_prompts=alignment_prompts, shots=shots,
                        mean_prompts=mean_prompts, trials=trials, top_k=top_k, seed=seed, method=method,
                        extract_options=extract_options, given_references=sorted(references or {}), resweep=resweep,
                        sweep_prompts=sweep_prompts, foreign=sorted(foreign or {}))
        _check_resume(out_dir, series, task_list, settings)
    measure = dict(mode=mode, n_prompts=n_prompts, alignment_prompts=alignment_prompts, cfg=cfg, progress=progress,
                   resweep=resweep and sweep_prompts, foreign=dict(foreign or {}))
    refs, records = _run(series, task_list, out_dir, references or {}, cfg, progress, measure)
    order = {l: n for n, l in enumerate(series.labels)}
    tnames = [t.name for t in task_list]
    records.sort(key=lambda r: (order[r["checkpoint"]], tnames.index(r["task"])))
    return Tracking(records, mode, {k: v.iv for k, v in refs.items()},
                    {k: v.seconds for k, v in refs.items()})


def _run(series: CheckpointSeries, task_list: list[Task], out_dir: Path | None, references: Mapping[str, InstructionVector],
         cfg: ExtractConfig, progress: bool, measure: dict[str, Any]) -> tuple[dict[str, "_Reference"], list[dict]]:
    """Every (checkpoint, task) record, loading each checkpoint once and only when it has work left."""
    refs: dict[str, _Reference] = {}
    records: list[dict[str, Any]] = []
    # Tasks with work left anywhere need their reference, which is always made on the first checkpoint.
    need_ref = [t for t in task_list if any(_saved(out_dir, ck, t) is None for ck in series.checkpoints)]
    for i, ck in enumerate(series.checkpoints):
        if all(_saved(out_dir, ck, t) for t in task_list) and not (i == 0 and need_ref):
            records += [json.loads(_saved(out_dir, ck, t).read_text()) for t in task_list]
            log.info("checkpoint %s: all tasks already measured in %s", ck.label, out_dir)
            continue
        model = series.load(i)
        try:
            if i == 0:
                for t in need_ref:
                    refs[t.name] = _reference(model, t, out_dir, references.get(t.name), cfg, progress,
                                              need_aie=measure["mode"] == "rerank")
            records += [_checkpoint_task(model, ck, series.fingerprints[ck.label], t, refs.get(t.name), out_dir,
                                         **measure) for t in task_list]
        finally:
            del model
    return refs, records


def _saved(out_dir: Path | None, ck: Checkpoint, task: Task) -> Path | None:
    """Where (checkpoint, task)'s record was saved, if it was."""
    path = out_dir / ck.label / f"{task.name}.json" if out_dir is not None else None
    return path if path is not None and path.exists() else None


def _checkpoint_task(model: IVModel, ck: Checkpoint, fp: str, task: Task, ref: "_Reference | None",
                     out_dir: Path | None, **measure: Any) -> dict[str, Any]:
    """The saved record of (checkpoint, task), or a new measurement, saved at once."""
    path = _saved(out_dir, ck, task)
    if path is not None:
        rec = json.loads(path.read_text())
        if rec.get("fingerprint") != fp:
            raise CheckpointError(
                f"{path} was measured on other weights than checkpoint {ck.label!r} has now (fingerprint "
                f"{rec.get('fingerprint')} vs {fp}): the checkpoint changed since. Choose a new out directory")
        return rec
    t0 = time.perf_counter()
    rec = _measure(model, ck, fp, task, ref, **measure)
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    if out_dir is not None:
        atomic_write_json(out_dir / ck.label / f"{task.name}.json", rec)
    return rec


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


def _reference(model: IVModel, task: Task, out_dir: Path | None, given: InstructionVector | None,
               cfg: ExtractConfig, progress: bool, need_aie: bool = True) -> _Reference:
    """The reference IV and the prompts every checkpoint is measured with (saved for resuming):
    the given IV, with the extraction's first stage run for its prompts (and the second for its
    effects when the sweep re-ranks heads, ``need_aie``), or a whole extraction."""
    ref_dir = out_dir / "reference" / task.name if out_dir else None
    if ref_dir is not None and (ref_dir / "prompts.json").exists():
        saved = json.loads((ref_dir / "prompts.json").read_text())
        iv = InstructionVector.load(ref_dir, model=model)
        aie = torch.tensor(saved["aie"]) if saved.get("aie") is not None else None
        return _Reference(iv, prompts_from_json(saved["mean"]), prompts_from_json(saved["corrupted"]),
                          aie, float(saved.get("seconds", 0.0)))
    t0 = time.perf_counter()
    if given is not None:
        given.check_compatible(model)
        run = RunContext(model, task, cfg, StageStore(None), progress)
        p, means, _, key = prompts_stage(run)
        means = given.mean_activations if given.mean_activations is not None else means
        aie = effects_stage(run, p, means, "shuffled", key)[0].aie if need_aie else None
        iv, prompts = given, p
    else:
        res = extract(model, task, cfg, progress=progress)
        iv, prompts, aie = res.iv, res.prompts, res.effects.aie
    seconds = round(time.perf_counter() - t0, 2)
    mean_p, corr_p = prompts.mean.prompts, prompts.corrupted.prompts
    if ref_dir is not None:
        iv.save(ref_dir)
        saved = {"mean": prompts_to_json(mean_p), "corrupted": prompts_to_json(corr_p),
                 "aie": None if aie is None else aie.tolist(), "seconds": seconds}
        atomic_write_json(ref_dir / "prompts.json", saved, indent=None)
    return _Reference(iv, mean_p, corr_p, aie, seconds)


def _measure(model: IVModel, ck: Checkpoint, fp: str, task: Task, ref: _Reference, *, mode: TrackMode,
             n_prompts: int, alignment_prompts: int, cfg: ExtractConfig, progress: bool, resweep: int = 0,
             foreign: Mapping[str, InstructionVector] | None = None) -> dict[str, Any]:
    """One checkpoint on one task: accuracies with the reference IV, its IV's similarity to the
    reference, and the alignment profiles."""
    shots, seed, batch_size = cfg.shots, cfg.seed, cfg.batch_size
    ev = evaluate_iv(model, task, ref.iv, n_prompts=n_prompts, shots=shots, seed=seed, batch_size=batch_size,
                     progress=False, conditions=("zero_shot", "zero_shot_iv", "few_shot"))
    means = mean_head_activations(model, encode_prompts(model, ref.mean_prompts), batch_size=batch_size,
                                  progress=progress)
    rec: dict[str, Any] = {"checkpoint": ck.label, "step": ck.step, "task": task.name, "fingerprint": fp, "mode": mode,
                           "n": ev.n}
    for c, r in ev.results.items():
        rec.update({c: r["top1"], f"{c}_lo": r["top1_lo"], f"{c}_hi": r["top1_hi"], f"{c}_loose": r["top1_loose"],
                    f"{c}_loose_lo": r["top1_loose_lo"], f"{c}_loose_hi": r["top1_loose_hi"]})
    post_norm = ref.iv.meta.get("post_norm") or "linearized"
    fixed = InstructionVector.build(model, means, heads=ref.iv.heads, post_norm=post_norm)
    rec["iv_cosine_fixed_heads"] = fixed.cosine(ref.iv)
    if mode == "fixed":
        iv = fixed
        rec.update(head_jaccard=None, aie_spearman=None, aie=None)
    else:
        ie = indirect_effects(model, encode_prompts(model, ref.corrupted_prompts), means, method=cfg.method,
                              progress=progress)
        iv = InstructionVector.build(model, means, ie, k=ref.iv.k, post_norm=post_norm)
        agree = rank_agreement(ref.aie, ie.aie, k=ref.iv.k)
        rec.update(head_jaccard=jaccard(iv.heads, ref.iv.heads), aie_spearman=agree["spearman"], aie=ie.aie.tolist(),
                   heads=[list(h) for h in iv.heads])
    rec["iv_cosine"] = iv.cosine(ref.iv)
    rec["iv_norm"] = iv.norm
    sets = evaluation_prompts(model, task, n_prompts=alignment_prompts, shots=shots, seed=seed)
    rec["alignment_zero_shot"] = residual_alignment(model, sets["zero_shot"], ref.iv.vector, batch_size=batch_size)
    rec["alignment_few_shot"] = residual_alignment(model, sets["few_shot"], ref.iv.vector, batch_size=batch_size)
    for name, other in (foreign or {}).items():
        rec[f"alignment_to/{name}"] = max(residual_alignment(model, sets["zero_shot"], other.vector,
                                                             batch_size=batch_size))
    if resweep:
        rec.update(_own_iv(model, task, fixed, ref.iv, cfg, n_prompts, resweep))
    return {k: json_safe(v) for k, v in rec.items()}


def _own_iv(model: IVModel, task: Task, own: InstructionVector, ref: InstructionVector, cfg: ExtractConfig,
            n_prompts: int, n_valid: int) -> dict[str, Any]:
    """The checkpoint's own IV (the reference's heads, this checkpoint's means) with its layer and
    scale chosen on the validation split, scored on the test split's zero-shot prompts."""
    split = task.split(cfg.seed)
    val = encode_prompts(model, sample_prompts(split.valid, style="zero_shot", n=n_valid, seed=cfg.seed,
                                               template=cfg.template, stream=3))
    sw = layer_sweep(model, own, val, scales=cfg.scales, batch_size=cfg.batch_size * 2, progress=False,
                     injections=(ref.injection,), max_memory_mb=cfg.max_memory_mb)
    own = own.replace(layer=sw.best_layer, scale=sw.best_scale, injection=sw.best_injection)
    test = evaluation_prompts(model, task, n_prompts=n_prompts, shots=cfg.shots, seed=cfg.seed)["zero_shot"]
    s = score_prompts(model, test, vector=own, batch_size=cfg.batch_size)
    right, loose = int((s.ranks == 0).sum()), int(s.loose_hits(model.tokenizer, test).sum())
    lo, hi = wilson_interval(right, len(test)) or (None, None)
    return {"own_layer": own.layer, "own_scale": own.scale, "own_valid_top1": sw.best_top1,
            "zero_shot_own_iv": right / len(test), "zero_shot_own_iv_lo": lo, "zero_shot_own_iv_hi": hi,
            "zero_shot_own_iv_loose": loose / len(test)}
