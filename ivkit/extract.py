"""The whole extraction, from a model and a task to a saved instruction vector.

Stages (each one is also callable on its own; see the functions named):

1. **split** the task, seeded (:meth:`ivkit.Task.split`);
2. **filter**: build clean prompts from training queries and keep those the model answers right
   (:func:`ivkit.score_prompts`);
3. **mean activations** over the first ``mean_prompts`` kept prompts
   (:func:`ivkit.mean_head_activations`);
4. **indirect effects** on ``trials`` corrupted prompts, the next kept prompts with their
   demonstrations' labels shuffled (:func:`ivkit.indirect_effects`); with
   ``ranking="zero_shot"`` (or ``"both"``), on zero-shot prompts of training queries instead (or
   too);
5. **build** the IV from the top ``k`` heads (:meth:`ivkit.InstructionVector.build`);
   or, with ``selection="greedy"``, choose the heads greedily for zero-shot accuracy on
   training queries (:func:`greedy_heads`) and build one IV per prefix of that path;
6. **layer sweep** on zero-shot prompts of the validation split (:func:`ivkit.layer_sweep`): the
   injection layer and scale (and k, the ranking, and with ``injection="auto"`` residual or
   heads injection).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import AnswerTokenError, InputError, TaskError
from .evaluate import LayerSweep, layer_sweep, score_prompts
from .io import atomic_write_text
from .mediation import IndirectEffects, indirect_effects, mean_head_activations
from .models import IVModel
from .plotting import to_html
from .tasks import (
    DEFAULT_TEMPLATE,
    EncodedPrompts,
    Prompt,
    PromptTemplate,
    Task,
    TaskSplit,
    encode_prompts,
    load_task,
    make_prompt,
    sample_prompts,
)
from .vectors import InstructionVector

log = logging.getLogger(__name__)

#: What ranks the heads (see :func:`extract`): the reference's shuffled-label trials, zero-shot
#: prompts, or one IV from each with the validation split choosing.
RANKINGS = ("shuffled", "zero_shot", "both")
#: How the IV's heads are chosen from the ranking(s): the top k, or greedily (see
#: :func:`greedy_heads`).
SELECTIONS = ("top_k", "greedy")


@dataclass
class GreedyPath:
    """The heads :func:`greedy_heads` added, in order, with the score after each addition.

    Attributes:
        heads: ``[(layer, head), ...]`` in the order they were added.
        top1: selection-set top-1 accuracy after each addition, ``len(heads)`` values.
        prob: selection-set mean probability of the answer's first token after each addition.
        pool: the candidate heads.
        scale: the heads injection's scale the path was chosen at.
        n: selection queries.
        seconds: wall time.
    """

    heads: list[tuple[int, int]]
    top1: list[float]
    prob: list[float]
    pool: list[tuple[int, int]]
    scale: float
    n: int
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"heads": [list(h) for h in self.heads], "top1": self.top1, "prob": self.prob,
                "pool": [list(h) for h in self.pool], "scale": self.scale, "n": self.n,
                "seconds": round(self.seconds, 3)}

    def to_pandas(self):
        """One row per step: ``step``, ``layer``, ``head``, ``top1``, ``prob``."""
        import pandas as pd
        return pd.DataFrame([{"step": i + 1, "layer": l, "head": h, "top1": a, "prob": p}
                             for i, ((l, h), a, p) in enumerate(zip(self.heads, self.top1, self.prob))])


def greedy_heads(
    model: IVModel,
    mean_acts: torch.Tensor,
    prompts: EncodedPrompts,
    pool: Sequence[tuple[int, int]],
    *,
    scale: float = 3.0,
    max_heads: int = 8,
    batch_size: int = 32,
    progress: bool = True,
) -> GreedyPath:
    """Choose heads one at a time for what the IV is for: zero-shot accuracy.

    At each step every head of ``pool`` not yet chosen is tried: all chosen heads plus that one
    are set to ``scale`` x their mean at the last token (the heads injection, see
    :mod:`ivkit.vectors`) on the zero-shot ``prompts``, and the head giving the best top-1
    accuracy, then the best mean answer probability, is added (the earlier one in ``pool`` on an
    exact tie). The path stops when no head improves that score or ``max_heads`` are chosen.

    Cost: about ``len(pool) * max_heads`` scorings of ``prompts``; keep the pool small (the top
    15 or so of a ranking) and the prompts held out from the ones the heads are judged on later.

    Args:
        mean_acts: clean mean head outputs ``(n_layers, n_heads, d_head)``.
        prompts: zero-shot selection prompts (encoded).
        pool: candidate ``(layer, head)`` pairs.
    """
    from .io import progress_bar

    g = model.geometry
    if tuple(mean_acts.shape) != (g.n_layers, g.n_heads, g.d_head):
        raise InputError(f"mean_acts has shape {tuple(mean_acts.shape)}; {model.name} needs "
                         f"({g.n_layers}, {g.n_heads}, {g.d_head})")
    pool = list(dict.fromkeys((int(l), int(h)) for l, h in pool))
    if not pool:
        raise InputError("greedy_heads needs at least one candidate head in pool")
    if int(max_heads) < 1:
        raise InputError(f"max_heads must be at least 1, got {max_heads}")
    if len(prompts) == 0:
        raise InputError("greedy_heads needs at least one selection prompt")
    t0 = time.perf_counter()
    chosen: list[tuple[int, int]] = []
    top1: list[float] = []
    prob: list[float] = []
    best = (-1.0, -1.0)
    bar = progress_bar(None, progress=progress, total=min(int(max_heads), len(pool)) * len(pool), desc="greedy heads")
    while len(chosen) < min(int(max_heads), len(pool)):
        step_best, step_head = None, None
        for hd in pool:
            if hd in chosen:
                continue
            iv = InstructionVector.build(model, mean_acts, heads=chosen + [hd])
            iv.injection, iv.scale = "heads", float(scale)
            s = score_prompts(model, prompts, vector=iv, batch_size=batch_size)
            key = (float((s.ranks == 0).float().mean()), float(s.probs.mean()))
            if step_best is None or key > step_best:
                step_best, step_head = key, hd
            bar.update(1)
        if step_best <= best:
            break
        best = step_best
        chosen.append(step_head)
        top1.append(step_best[0])
        prob.append(step_best[1])
        log.info("greedy heads: + %d.%d -> top-1 %.3f, prob %.3f", *step_head, *step_best)
    bar.close()
    return GreedyPath(chosen, top1, prob, pool, float(scale), len(prompts), time.perf_counter() - t0)


@dataclass
class Extraction:
    """What :func:`extract` produced.

    Attributes:
        iv: the instruction vector, with its injection layer set when a sweep ran.
        effects: the :class:`~ivkit.IndirectEffects` of every head, for the ranking the IV's
            heads come from (``effects.info["ranking"]``; with ``selection="greedy"`` and
            ``ranking="both"``, the shuffled one).
        sweep: the validation-split :class:`~ivkit.LayerSweep`, or None.
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
    prompts: "ExtractionPrompts | None" = None
    other_effects: dict[str, IndirectEffects] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sync_timings()

    def record_timing(self, stage: str, seconds: float, *, first: bool = False) -> None:
        """Add a stage's seconds (e.g. the model load, timed by the caller) to :attr:`timings`,
        ``iv.json`` and ``indirect_effects.json``; ``first`` puts it before the others."""
        rest = {k: v for k, v in self.timings.items() if k != stage}
        self.timings = {stage: seconds, **rest} if first else {**rest, stage: seconds}
        self._sync_timings()

    def _sync_timings(self) -> None:
        self.iv.meta["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        self.effects.info["timings"] = self.iv.meta["timings"]

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
            atomic_write_text(out / "layer_sweep.json", json.dumps(self.sweep.to_dict(), indent=1))
        greedy = "head_selection" in self.iv.meta
        to_html(self.effects.plot(top_k=self.iv.k, title=_title(self.iv), heads=self.iv.heads if greedy else None),
                out / "heads.html")
        return out


def _title(iv: InstructionVector) -> str:
    return f"AIE per head: {iv.meta.get('model', {}).get('id')} on {iv.meta.get('task')}"


def filter_prompts(model: IVModel, prompts: Sequence[Prompt], need: int, *, batch_size: int = 16,
                   progress: bool = True, record_heads: bool = False
                   ) -> tuple[EncodedPrompts, dict[str, Any], torch.Tensor | None]:
    """Keep the prompts whose answer's first token ranks first.

    Prompts are tokenised and scored in chunks, in order, until ``need`` are found or they run
    out, so the result is deterministic and a large task costs only what it needs.

    Returns:
        The kept prompts (at most ``need``), ``{"tried", "correct", "accuracy", "dropped"}``, and
        with ``record_heads`` their head outputs at the last token ``(kept, n_layers, n_heads,
        d_head)`` from the same passes (else None).
    """
    kept: list[EncodedPrompts] = []
    heads: list[torch.Tensor] = []
    n_kept = tried = dropped = 0
    chunk = max(batch_size * 4, 32)
    for start in range(0, len(prompts), chunk):
        try:
            enc = encode_prompts(model, prompts[start:start + chunk], log_dropped=False)
        except AnswerTokenError:
            dropped += len(prompts[start:start + chunk])
            continue
        dropped += len(enc.dropped)
        scores = score_prompts(model, enc, batch_size=batch_size, progress=progress, desc="filter",
                               record_heads=record_heads)
        tried += len(enc)
        right = [i for i, r in enumerate(scores.ranks.tolist()) if r == 0]
        kept.append(enc.subset(right))
        if record_heads:
            heads.append(scores.heads[right])
        n_kept += len(right)
        if n_kept >= need:
            break
    if dropped:
        log.warning("filter: skipped %d prompts whose answer has no usable first token", dropped)
    merged = EncodedPrompts.concat(kept) if kept else EncodedPrompts([], [], [], torch.empty(0, dtype=torch.long))
    stats = {"tried": tried, "correct": n_kept, "accuracy": n_kept / max(tried, 1), "dropped": dropped}
    n = min(need, len(merged))
    return merged.subset(range(n)), stats, (torch.cat(heads)[:n] if record_heads and heads else None)


@dataclass
class ExtractionPrompts:
    """The prompts an extraction uses.

    Attributes:
        mean: clean prompts for the mean head activations.
        mean_heads: their head outputs ``(n, n_layers, n_heads, d_head)``, recorded during the
            filter's passes, or None (then :func:`ivkit.mean_head_activations` computes them).
        corrupted: the trials: clean prompts with their demonstrations' labels shuffled.
        filter: statistics of the correctness filter.
        split: the task split they come from.
    """

    mean: EncodedPrompts
    corrupted: EncodedPrompts
    filter: dict[str, Any]
    split: TaskSplit
    mean_heads: torch.Tensor | None = None


def prepare_prompts(
    model: IVModel,
    task: Task | str,
    *,
    shots: int = 10,
    mean_prompts: int = 100,
    trials: int = 25,
    seed: int = 0,
    style: str = "few_shot",
    template: PromptTemplate = DEFAULT_TEMPLATE,
    filter_correct: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> ExtractionPrompts:
    """Stages 1-2 of :func:`extract`: split, build clean prompts from training queries, keep the
    ones the model gets right, and derive the corrupted trials from the next kept ones."""
    task = load_task(task)
    if style not in ("few_shot", "instruction"):
        raise InputError(f"clean prompts must be few_shot or instruction, got {style!r}")
    split = task.split(seed)
    log.info("task %s: %s", task.name, split.sizes())
    need = mean_prompts + trials
    clean = sample_prompts(split.train, style=style, demo_pool=split.train, shots=shots, seed=seed,
                           template=template, instruction=task.instruction, tokenizer=model.tokenizer, stream=1)
    if filter_correct:
        kept, fstats, heads = filter_prompts(model, clean, need, batch_size=batch_size, progress=progress,
                                             record_heads=True)
        log.info("filter: %d of %d clean %s prompts answered right (%.2f)", fstats["correct"], fstats["tried"],
                 style, fstats["accuracy"])
    else:
        kept, heads = encode_prompts(model, clean[:need]), None
        fstats = {"tried": 0, "correct": None, "accuracy": None, "skipped": True}
    if len(kept) == 0:
        raise TaskError(
            f"{model.name} answers none of the {fstats['tried']} clean {shots}-shot prompts of {task.name!r} "
            f"correctly, so there is no task behaviour to extract. Pick a task the model can do "
            f"(ivkit tasks --model {model.name} measures each one), or raise --shots"
        )
    if len(kept) >= need:
        n_mean, trial_idx = mean_prompts, list(range(mean_prompts, need))
    else:  # too few: average over all of them and reuse them as trials
        log.warning("only %d correct clean prompts for %d needed (%d mean + %d trials); the trials reuse "
                    "mean-activation queries", len(kept), need, mean_prompts, trials)
        n_mean, trial_idx = len(kept), list(range(min(trials, len(kept))))
    rng = np.random.default_rng([seed, 0xC0])
    corrupted = []
    for i in trial_idx:
        p = kept.prompts[i]
        demos = p.demos
        if len(demos) < 2:  # instruction-style clean prompts carry no demonstrations: draw some
            pick = rng.choice(len(split.train), size=min(shots + 1, len(split.train)), replace=False)
            demos = tuple(split.train[int(j)] for j in pick if split.train[int(j)] != p.query)[:max(shots, 2)]
        corrupted.append(make_prompt(p.query, style="shuffled", demos=demos, template=template, rng=rng))
    return ExtractionPrompts(kept.subset(range(n_mean)), encode_prompts(model, corrupted), fstats, split,
                             heads[:n_mean] if heads is not None else None)


def extract(
    model: IVModel,
    task: Task | str,
    *,
    shots: int = 10,
    mean_prompts: int = 100,
    trials: int = 25,
    top_k: int | Sequence[int] | None = None,
    seed: int = 0,
    method: str | None = None,
    metric: str = "prob",
    style: str = "few_shot",
    template: PromptTemplate = DEFAULT_TEMPLATE,
    post_norm: str = "linearized",
    sweep: bool = True,
    sweep_prompts: int = 100,
    scales: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
    injection: str = "residual",
    ranking: str = "shuffled",
    zero_shot_trials: int = 100,
    selection: str = "top_k",
    greedy_pool: int = 15,
    greedy_max_heads: int = 8,
    greedy_scale: float = 3.0,
    greedy_queries: int = 100,
    filter_correct: bool = True,
    batch_size: int = 16,
    progress: bool = True,
    **method_options: Any,
) -> Extraction:
    """Extract an instruction vector for ``task``.

    Args:
        model: an :class:`~ivkit.IVModel` (see :func:`~ivkit.load_model`).
        task: a :class:`~ivkit.Task` or a built-in name / file path.
        shots: demonstrations per prompt.
        mean_prompts: clean prompts averaged for the mean head activations.
        trials: corrupted prompts for the indirect effects.
        top_k: heads in the IV (default 10); several values (e.g. ``(3, 5, 10, 20)``) build one
            IV each and the validation sweep chooses among them, with the layer and scale. Not
            with ``selection="greedy"``, whose candidates are the greedy path's prefixes.
        seed: seeds every random choice; same seed, same numbers.
        method: indirect-effect method: ``"fast"`` (exact, the default on the torch backend and
            on local nnsight models), ``"naive"`` (the per-head oracle; the default on the
            TransformerLens and remote nnsight backends) or
            ``"attribution"`` (approximate); see :mod:`ivkit.mediation`.
        metric: ``"prob"`` (first answer token), ``"logit"`` (its logit) or ``"nll"`` (whole answer).
        style: clean prompt style: ``"few_shot"`` (function vectors) or ``"instruction"``
            (zero-shot with the task's instruction, as in Jiang et al.).
        post_norm: Gemma's post-attention norm handling; see :mod:`ivkit.vectors`.
        sweep: choose the injection layer and scale on the validation split.
        sweep_prompts: at most this many validation queries in the sweep.
        scales: the multipliers the sweep tries with every layer (``(1.0,)`` for the reference
            recipe, which always injects at scale 1).
        injection: ``"residual"`` (the reference recipe: add the vector after one layer),
            ``"heads"`` (patch each top head to ``scale *`` its mean at its own layer) or
            ``"auto"`` (the validation sweep chooses); see :mod:`ivkit.vectors`.
        ranking: which indirect effect ranks the heads. ``"shuffled"`` (the reference recipe):
            each head patched to its mean on the shuffled-label 10-shot trials. ``"zero_shot"``:
            each head patched to its mean on ``zero_shot_trials`` zero-shot prompts built from
            training queries, the setting the IV is used in. ``"both"``: one IV per ranking
            (and per k), and the validation sweep chooses. See :mod:`ivkit.mediation`.
        zero_shot_trials: zero-shot prompts for the ``"zero_shot"`` ranking.
        selection: ``"top_k"`` (the reference recipe: the top k heads of the ranking) or
            ``"greedy"``: the pool is the top ``greedy_pool`` heads of each ranking computed, and
            :func:`greedy_heads` adds them one at a time for zero-shot top-1 accuracy on
            ``greedy_queries`` training queries (a sample of its own) with the heads injection at
            ``greedy_scale``, up to ``greedy_max_heads``; each prefix of that path is a
            candidate IV and the validation sweep chooses among them. Needs the sweep. Costs
            about ``pool x max_heads`` scorings of the selection queries (12 min on SmolLM2 on
            two slow cores for a pool of 23).
        filter_correct: keep only clean prompts the model answers right (the reference recipe).
            Turn off only for models that cannot do the task at all, such as random-init tests.
        batch_size: prompts per forward pass.
    """
    task = load_task(task)
    if selection not in SELECTIONS:
        raise InputError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if selection == "greedy":
        if top_k is not None:
            raise InputError("top_k does not apply to selection='greedy': its candidates are the prefixes of the "
                             "greedy path; cap them with greedy_max_heads")
        if not sweep:
            raise InputError("selection='greedy' needs the validation sweep to choose the path's length")
        for name, value in (("greedy_pool", greedy_pool), ("greedy_max_heads", greedy_max_heads),
                            ("greedy_queries", greedy_queries)):
            if int(value) < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if not np.isfinite(float(greedy_scale)):
            raise InputError(f"greedy_scale must be finite, got {greedy_scale}")
    ks = _check_options(model, top_k=10 if top_k is None else top_k, method=method, metric=metric, style=style,
                        post_norm=post_norm, sweep=sweep, scales=scales, shots=shots, mean_prompts=mean_prompts,
                        trials=trials, injection=injection, ranking=ranking, zero_shot_trials=zero_shot_trials)
    injections = ["residual", "heads"] if injection == "auto" else [injection]
    rankings = list(RANKINGS[:2]) if ranking == "both" else [ranking]
    timings: dict[str, float] = {}

    # 1-2. Clean prompts from training queries, filtered to the ones the model gets right.
    t0 = time.perf_counter()
    prompts = prepare_prompts(model, task, shots=shots, mean_prompts=mean_prompts, trials=trials, seed=seed,
                              style=style, template=template, filter_correct=filter_correct,
                              batch_size=batch_size, progress=progress)
    fstats, split = prompts.filter, prompts.split
    timings["filter"] = time.perf_counter() - t0

    # 3. Mean activations.
    t0 = time.perf_counter()
    if prompts.mean_heads is not None:  # recorded by the filter's own passes
        mean_acts = prompts.mean_heads.mean(0)
    else:
        mean_acts = mean_head_activations(model, prompts.mean, batch_size=batch_size, progress=progress)
    timings["mean_activations"] = time.perf_counter() - t0

    # 4. Indirect effects: on the corrupted prompts, and/or on zero-shot training prompts.
    corrupted = prompts.corrupted
    t0 = time.perf_counter()
    effects_by: dict[str, IndirectEffects] = {}
    trial_prompts = {"shuffled": corrupted}
    if "zero_shot" in rankings:
        trial_prompts["zero_shot"] = encode_prompts(model, sample_prompts(
            split.train, style="zero_shot", n=zero_shot_trials, seed=seed, template=template, stream=11))
    for r in rankings:
        info = {"model": model.name, "task": task.name, "seed": seed, "ranking": r}
        effects_by[r] = indirect_effects(model, trial_prompts[r], mean_acts, method=method, metric=metric,
                                         progress=progress, info=info, **method_options)
    timings["indirect_effects"] = time.perf_counter() - t0

    # 5. The vector (one per candidate ranking and k, or per prefix of the greedy path).
    t0 = time.perf_counter()
    provenance = dict(task=task.name, task_source=task.source, template=template.to_dict(), style=style, seed=seed,
                      shots=shots, mean_prompts=len(prompts.mean), filter=fstats)
    path = None
    if selection == "greedy":
        pool = [(l, h) for r in rankings for l, h, _ in effects_by[r].top_heads(int(greedy_pool))]
        sel = encode_prompts(model, sample_prompts(split.train, style="zero_shot", n=int(greedy_queries), seed=seed,
                                                   template=template, stream=13))
        path = greedy_heads(model, mean_acts, sel, pool, scale=greedy_scale, max_heads=int(greedy_max_heads),
                            batch_size=batch_size * 2, progress=progress)
        timings["greedy"] = path.seconds
        keys = [(ranking, n) for n in range(1, len(path.heads) + 1)]
        candidates = [InstructionVector.build(
            model, mean_acts, effects_by[rankings[0]], heads=path.heads[:n], post_norm=post_norm,
            trials=len(trial_prompts[rankings[0]]), ranking=ranking, head_selection={"method": "greedy", **path.to_dict()},
            method=effects_by[rankings[0]].method, metric=metric, **provenance) for _, n in keys]
    else:
        keys = [(r, k) for r in rankings for k in ks]
        candidates = [InstructionVector.build(
            model, mean_acts, effects_by[r], k=k, post_norm=post_norm, trials=len(trial_prompts[r]), ranking=r,
            **provenance) for r, k in keys]
    if injection == "heads":
        for c in candidates:
            c.injection = "heads"
    timings["build"] = time.perf_counter() - t0 - timings.get("greedy", 0.0)

    # 6. Injection layer and scale (and k, when several are given), chosen on the validation split.
    iv, sw = candidates[0], None
    if sweep:
        t0 = time.perf_counter()
        val = encode_prompts(model, sample_prompts(split.valid, style="zero_shot", n=sweep_prompts, seed=seed,
                                                   template=template, stream=3))
        memory = {"max_memory_mb": method_options["max_memory_mb"]} if "max_memory_mb" in method_options else {}
        sweeps = [layer_sweep(model, c, val, scales=scales, batch_size=batch_size * 2, progress=progress,
                              split="valid", injections=injections, **memory) for c in candidates]
        # Ties go to the reference ranking, then to the smaller k.
        best = max(range(len(keys)), key=lambda i: (sweeps[i].best_top1, sweeps[i].best_prob,
                                                    keys[i][0] == "shuffled", -keys[i][1]))
        iv, sw = candidates[best], sweeps[best]
        iv.injection, iv.layer, iv.scale = sw.best_injection, sw.best_layer, sw.best_scale
        iv.meta["layer_selection"] = {"split": "valid", "n": sw.n, "style": "zero_shot", "scales": list(sw.scales),
                                      "injections": injections, "injection": iv.injection,
                                      "top1": sw.best_top1, "baseline_top1": sw.baseline_top1,
                                      "criterion": "top-1 accuracy, then mean answer probability, then residual "
                                                   "over heads injection, then the smaller scale, then the "
                                                   "lower layer"}
        if path is not None:
            iv.meta["k_selection"] = {"candidates": [n for _, n in keys], "valid_top1": [x.best_top1 for x in sweeps],
                                      "criterion": "top-1 accuracy, then mean answer probability, then the fewer "
                                                   "heads (prefixes of the greedy path)"}
        elif len(ks) > 1:
            iv.meta["k_selection"] = {"candidates": ks, "valid_top1": [s.best_top1 for (r, _), s in zip(keys, sweeps)
                                                                       if r == iv.meta["ranking"]],
                                      "criterion": "top-1 accuracy, then mean answer probability, then the smaller k"}
        if len(rankings) > 1 and path is None:
            iv.meta["ranking_selection"] = {
                "candidates": rankings,
                "valid_top1": [max(s.best_top1 for (r2, _), s in zip(keys, sweeps) if r2 == r) for r in rankings],
                "criterion": "top-1 accuracy, then mean answer probability, then the shuffled ranking"}
        timings["layer_sweep"] = time.perf_counter() - t0
    chosen = iv.meta["ranking"] if iv.meta["ranking"] in effects_by else rankings[0]
    others = {r: e for r, e in effects_by.items() if r != chosen}
    return Extraction(iv, effects_by[chosen], sw, timings, fstats, prompts, others)


def _check_options(model: IVModel, *, top_k, method, metric, style, post_norm, sweep, scales, shots,
                   mean_prompts, trials, injection="residual", ranking="shuffled", zero_shot_trials=100) -> list[int]:
    """Every argument of :func:`extract` checked before any forward pass, so that a typo costs
    nothing; returns the sorted ``top_k`` candidates."""
    from .mediation import METRICS, resolve_method
    from .vectors import POST_NORM_MODES, check_weights_local

    ks = [int(top_k)] if isinstance(top_k, int) else sorted({int(k) for k in top_k})
    n = model.geometry.n_total_heads
    if not ks:
        raise InputError("top_k needs at least one value")
    if ks[0] < 1 or ks[-1] > n:
        raise InputError(f"top_k must be in 1..{n} (the model's heads), got {ks if len(ks) > 1 else ks[0]}")
    if len(ks) > 1 and not sweep:
        raise InputError("several top_k candidates need the validation sweep to choose among them")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {METRICS}")
    if style not in ("few_shot", "instruction"):
        raise InputError(f"clean prompts must be few_shot or instruction, got {style!r}")
    if injection not in ("residual", "heads", "auto"):
        raise InputError(f"injection must be residual, heads or auto, got {injection!r}")
    if injection == "auto" and not sweep:
        raise InputError("injection='auto' needs the validation sweep to choose between residual and heads")
    if ranking not in RANKINGS:
        raise InputError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    if ranking == "both" and not sweep:
        raise InputError("ranking='both' needs the validation sweep to choose between the rankings")
    if post_norm not in POST_NORM_MODES:
        raise InputError(f"post_norm must be one of {POST_NORM_MODES}, got {post_norm!r}")
    if sweep and (not list(scales) or not all(np.isfinite(float(x)) for x in scales)):
        raise InputError(f"the sweep needs at least one finite scale, got {list(scales)}")
    for name, value, low in (("shots", shots, 0 if style == "instruction" else 1), ("mean_prompts", mean_prompts, 1),
                             ("trials", trials, 1), ("zero_shot_trials", zero_shot_trials, 1)):
        if int(value) < low:
            raise InputError(f"{name} must be at least {low}, got {value}")
    resolve_method(model, method)      # the backend can run it
    check_weights_local(model)         # building the IV needs W_O here (not on NDIF)
    return ks

