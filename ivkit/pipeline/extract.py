"""The whole extraction, from a model and a task to an instruction vector (`extract`).

Stages (`ivkit.pipeline.stages`; each one is also callable on its own, and remembered in
the run directory so an interrupted run resumes):

1. **prompts**: split the task (seeded), build clean prompts from training queries, keep those
   the model answers right, record their head outputs (the mean activations), derive the
   corrupted trials;
2. **effects**: the indirect effect of every head, per ranking (`ivkit.indirect_effects`);
3. **heads**: the candidate head sets (the top k of each ranking, or the prefixes of the greedy
   path, `greedy_heads`);
4. **build** one IV per candidate (`ivkit.InstructionVector.build`);
5. **sweep** on zero-shot prompts of the validation split (`ivkit.layer_sweep`): the
   injection layer and scale, and the candidate (k, ranking, injection) with the best top-1.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.html import heat, table
from ..core.io import atomic_write_json
from ..core.plots import to_html
from ..core.tasks import Task, load_task
from ..evaluation import LayerSweep
from ..mediation import IndirectEffects
from ..models.model import IVModel
from ..vectors import InstructionVector
from .config import ExtractConfig
from .greedy import GreedyPath
from .prompts import ExtractionPrompts
from .stages import Candidate, RunContext, effects_stage, heads_stage, prompts_stage, sweep_stage
from .store import StageStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Extraction:
    """What `extract` produced.

    Attributes:
        iv: the instruction vector, with its injection layer set when a sweep ran.
        effects: the `IndirectEffects` of every head, for the ranking the IV's
            heads come from (``effects.info["ranking"]``; with ``selection="greedy"`` and
            ``ranking="both"``, the shuffled one).
        sweep: the validation-split `LayerSweep`, or None.
        timings: seconds per stage (``filter``, ``mean_activations``, ``indirect_effects``,
            ``greedy`` with ``selection="greedy"``, ``build``, ``layer_sweep``).
        filter: how many clean prompts were tried and how many the model got right.
        prompts: the clean and corrupted prompts used (to re-measure other checkpoints with).
        other_effects: with ``ranking="both"``, the effects of the ranking not chosen, by name.
    """

    iv: InstructionVector
    effects: IndirectEffects
    sweep: LayerSweep | None
    timings: dict[str, float] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=dict)
    prompts: ExtractionPrompts | None = None
    other_effects: dict[str, IndirectEffects] = field(default_factory=dict)
    #: the stages loaded from the run directory instead of computed (a resumed run)
    resumed: tuple[str, ...] = ()

    @classmethod
    def assemble(cls, iv: InstructionVector, effects: IndirectEffects, sweep: LayerSweep | None,
                 timings: dict[str, float], **rest: Any) -> "Extraction":
        """An extraction whose IV and effects carry ``timings`` (``iv.json``, ``indirect_effects.json``)."""
        rounded = {k: round(v, 3) for k, v in timings.items()}
        return cls(iv.replace(meta={"timings": rounded}), effects.with_info(timings=rounded), sweep, dict(timings),
                   **rest)

    def with_timings(self, **first: float) -> "Extraction":
        """A copy with more stage timings (the model load, timed by the caller) put first."""
        timings = {**first, **{k: v for k, v in self.timings.items() if k not in first}}
        return Extraction.assemble(self.iv, self.effects, self.sweep, timings, filter=self.filter,
                                   prompts=self.prompts, other_effects=self.other_effects, resumed=self.resumed)

    def _repr_html_(self) -> str:
        rows = [{"rank": i + 1, "layer": l, "head": h, "aie": a} for i, ((l, h), a) in
                enumerate(zip(self.iv.heads, self.iv.head_aie))]
        stages = [{"stage": k, "seconds": v} for k, v in self.timings.items()]
        return (f"<b>{html.escape(repr(self))}</b>"
                + heat(self.effects.aie.numpy(), marked=self.iv.heads, caption="AIE per head; the IV's heads outlined")
                + table(rows, caption="the IV's heads", digits=5) + table(stages, caption="seconds per stage", digits=1))

    def __repr__(self) -> str:
        where = "heads injection" if self.iv.injection == "heads" else f"layer {self.iv.layer}"
        heads = " ".join(f"{l}.{h}" for l, h in self.iv.heads)
        sweep = f", valid top-1 {self.sweep.best_top1:.3f}" if self.sweep is not None else ""
        return (f"Extraction({self.iv.meta.get('task')!r} on {self.iv.meta.get('model', {}).get('id')!r}: "
                f"k={self.iv.k} [{heads}], {where}, scale {self.iv.scale:g}{sweep}; "
                f"{sum(self.timings.values()):.1f} s)")

    def save(self, out: str | Path) -> Path:
        """Write ``iv.safetensors``, ``iv.json``, ``indirect_effects.json`` (the ranking the IV
        uses; ``indirect_effects_<ranking>.json`` for any other), ``layer_sweep.json`` and
        ``heads.html`` into ``out``."""
        out = Path(out)
        self.iv.save(out)
        self.effects.save(out / "indirect_effects.json")
        for name, eff in self.other_effects.items():
            eff.save(out / f"indirect_effects_{name}.json")
        if self.sweep is not None:
            atomic_write_json(out / "layer_sweep.json", self.sweep.to_dict())
        greedy = "head_selection" in self.iv.meta
        to_html(self.effects.plot(top_k=self.iv.k, title=_title(self.iv), heads=self.iv.heads if greedy else None),
                out / "heads.html")
        return out


def _title(iv: InstructionVector) -> str:
    return f"AIE per head: {iv.meta.get('model', {}).get('id')} on {iv.meta.get('task')}"


def extract(model: IVModel, task: Task | str, config: ExtractConfig | None = None, *, out: str | Path | None = None,
            progress: bool = True, **options: Any) -> Extraction:
    """Extract an instruction vector for ``task``.

    Args:
        model: an `IVModel` (see `load_model`).
        task: a `Task` or a built-in name / file path.
        config: the settings (`ExtractConfig`); or give them as keyword ``options``
            (``top_k=(3, 5, 10)``, ``ranking="both"``, ...), checked the same way. A mistyped
            option is an error naming the closest one.
        out: a run directory: every stage's output is remembered there (``.stages/``) as soon as
            it exists, an interrupted run resumes where it stopped and gives the same result, and
            the artifacts (`Extraction.save`) are written there at the end.

    The settings (see `ExtractConfig` for all of them): ``shots``, ``mean_prompts`` and
    ``trials`` size the prompts; ``method`` and ``metric`` the indirect effects
    (`ivkit.mediation`); ``ranking`` (``shuffled``, the function-vectors recipe;
    ``zero_shot``; ``both``), ``selection`` (``top_k`` or ``greedy``) and ``top_k`` the heads;
    ``sweep``, ``scales`` and ``injection`` (``residual``, ``heads``, ``auto``) where and how the
    IV is injected, chosen on the validation split only.
    """
    if config is not None and options:
        raise TypeError("give a config or keyword options, not both")
    cfg = config or ExtractConfig.from_options(**options)
    task = load_task(task, instruction=cfg.instruction)
    cfg.check_model(model)
    run = RunContext(model, task, cfg, StageStore(out), progress)
    prompts, means, timings, prompts_key = prompts_stage(run)
    effects, keys = {}, []
    for r in cfg.rankings:
        effects[r], key = effects_stage(run, prompts, means, r, prompts_key)
        keys.append(key)
    timings["indirect_effects"] = sum(e.seconds for e in effects.values())
    candidates, path, heads_key = heads_stage(run, prompts, means, effects, keys)
    if path is not None:
        timings["greedy"] = path.seconds
    t0 = time.perf_counter()
    ivs = [_build(run, c, means, effects, prompts, path) for c in candidates]
    timings["build"] = time.perf_counter() - t0
    iv, sweep = ivs[0], None
    if cfg.sweeps:
        sweeps = sweep_stage(run, ivs, prompts, heads_key)
        timings["layer_sweep"] = sum(s.seconds for s in sweeps)
        iv, sweep = _choose(cfg, candidates, ivs, sweeps, path)
    elif cfg.layer is not None:
        iv = iv.replace(layer=cfg.layer, injection="residual", meta={"layer_selection": {"given": cfg.layer}})
    chosen = iv.meta["ranking"] if iv.meta["ranking"] in effects else cfg.rankings[0]
    others = {r: e for r, e in effects.items() if r != chosen}
    res = Extraction.assemble(iv, effects[chosen], sweep, timings, filter=prompts.filter, prompts=prompts,
                              other_effects=others, resumed=tuple(run.store.resumed))
    if out is not None:
        res.save(out)
    return res


def _build(run: RunContext, c: Candidate, means: Any, effects: dict[str, IndirectEffects],
           prompts: ExtractionPrompts, path: GreedyPath | None) -> InstructionVector:
    """The candidate's IV, with the extraction's provenance in its ``meta``."""
    cfg, task = run.cfg, run.task
    provenance = dict(task=task.name, task_source=task.source, template=cfg.template.to_dict(), style=cfg.style,
                      seed=cfg.seed, shots=cfg.shots, mean_prompts=len(prompts.mean), filter=prompts.filter)
    injection = "heads" if cfg.injection == "heads" else "residual"
    if c.selection == "top_k":
        ie = effects[c.ranking]
        return InstructionVector.build(run.model, means, ie, k=c.k, post_norm=cfg.post_norm, injection=injection,
                                       trials=ie.per_trial.shape[0], ranking=c.ranking, **provenance)
    first = effects[cfg.rankings[0]]
    return InstructionVector.build(run.model, means, first, heads=c.heads, post_norm=cfg.post_norm,
                                   injection=injection, trials=first.per_trial.shape[0], ranking=cfg.ranking,
                                   head_selection={"method": "greedy", **path.to_dict()}, method=first.method,
                                   metric=cfg.metric, **provenance)


def _choose(cfg: ExtractConfig, candidates: list[Candidate], ivs: list[InstructionVector], sweeps: list[LayerSweep],
            path: GreedyPath | None) -> tuple[InstructionVector, LayerSweep]:
    """The candidate with the best validation top-1 (ties: the higher answer probability, the
    shuffled ranking, the smaller k), injected as its sweep chose, with the choice recorded."""
    best = max(range(len(candidates)), key=lambda i: (sweeps[i].best_top1, sweeps[i].best_prob,
                                                      candidates[i].ranking == "shuffled", -candidates[i].k))
    iv, sw = ivs[best], sweeps[best]
    meta: dict[str, Any] = {"layer_selection": {
        "split": "valid", "n": sw.n, "style": "zero_shot", "scales": list(sw.scales), "injections": list(cfg.injections),
        "injection": sw.best_injection, "top1": sw.best_top1, "baseline_top1": sw.baseline_top1,
        "criterion": "top-1 accuracy, then mean answer probability, then residual over heads injection, then the "
                     "smaller scale, then the lower layer"}}
    if cfg.recipe == "auto":
        meta["recipe"] = {"name": "auto", "chosen": {"selection": candidates[best].selection,
                                                     "ranking": candidates[best].ranking, "k": candidates[best].k},
                          "candidates": [{"selection": c.selection, "ranking": c.ranking, "k": c.k,
                                          "valid_top1": s.best_top1, "injection": s.best_injection,
                                          "layer": s.best_layer, "scale": s.best_scale}
                                         for c, s in zip(candidates, sweeps)],
                          "criterion": "top-1 accuracy on the validation split, then mean answer probability, then "
                                       "the shuffled ranking, then the fewer heads"}
        return iv.replace(injection=sw.best_injection, layer=sw.best_layer, scale=sw.best_scale, meta=meta), sw
    if path is not None:
        meta["k_selection"] = {"candidates": [c.k for c in candidates], "valid_top1": [s.best_top1 for s in sweeps],
                               "criterion": "top-1 accuracy, then mean answer probability, then the fewer heads "
                                            "(prefixes of the greedy path)"}
    elif len(cfg.ks) > 1:
        meta["k_selection"] = {"candidates": list(cfg.ks),
                               "valid_top1": [s.best_top1 for c, s in zip(candidates, sweeps) if c.ranking == iv.meta["ranking"]],
                               "criterion": "top-1 accuracy, then mean answer probability, then the smaller k"}
    if len(cfg.rankings) > 1 and path is None:
        meta["ranking_selection"] = {
            "candidates": list(cfg.rankings),
            "valid_top1": [max(s.best_top1 for c, s in zip(candidates, sweeps) if c.ranking == r) for r in cfg.rankings],
            "criterion": "top-1 accuracy, then mean answer probability, then the shuffled ranking"}
    return iv.replace(injection=sw.best_injection, layer=sw.best_layer, scale=sw.best_scale, meta=meta), sw
