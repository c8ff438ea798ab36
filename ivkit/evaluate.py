"""Scoring prompts, choosing the injection layer, and the six-condition evaluation.

Concepts
--------
* **First-token accuracy**: a prompt counts as right at top-``k`` when the answer's first token is
  among the ``k`` highest logits at the last position. ``rank`` 0 means top-1.
* **Layer sweep**: the IV is added after each block in turn, on zero-shot prompts of the
  *validation* split; the best layer (top-1 accuracy, then mean probability of the answer token)
  is the injection layer. The test split is never used to choose anything.
* **Evaluation** (:func:`evaluate_iv`), on the test split, same queries in every condition:

  ================  ===============================================================
  ``zero_shot``     the query alone
  ``zero_shot_iv``  the query alone, IV added at the chosen layer
  ``shuffled``      ``shots`` demonstrations with their labels shuffled
  ``shuffled_iv``   the same, IV added
  ``few_shot``      ``shots`` clean demonstrations
  ``random_control`` the query alone, plus a random vector of the IV's norm
  ================  ===============================================================

  Each condition also reports ``top1_icl_correct``: its top-1 accuracy on only the test queries
  that clean ``few_shot`` answers right (``n_icl_correct`` of them). This is how the
  function-vectors code reports its zero-shot + FV and shuffled + FV figures (it evaluates on the
  queries the model gets right in context), so it is the number to compare with those; the plain
  ``top1`` is over every test query.
* **Sampling noise**: with 100 test queries one query moves an accuracy by 0.01, and the 95%
  interval around 0.70 is 0.60-0.78. Every top-1 figure comes with its Wilson score
  interval (``top1_lo``/``top1_hi``, and ``top1_icl_correct_lo``/``_hi``; :func:`wilson_interval`).
  Evaluate on the whole test split (``n_prompts`` at least its size) for the tightest figures.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .errors import InputError
from .hooks import add_to_residual, record_head_outputs
from .io import progress_bar
from .models import IVModel, length_batches
from .tasks import DEFAULT_TEMPLATE, EncodedPrompts, PromptTemplate, Task, TaskSplit, encode_prompts, load_task, sample_prompts
from .vectors import InstructionVector

log = logging.getLogger(__name__)

CONDITIONS = ("zero_shot", "zero_shot_iv", "shuffled", "shuffled_iv", "few_shot", "random_control")


@dataclass
class Scores:
    """Per-prompt results of :func:`score_prompts`.

    Attributes:
        ranks: ``(n,)`` rank of the answer's first token (0 = top-1).
        probs: ``(n,)`` its probability.
        heads: ``(n, n_layers, n_heads, d_head)`` head outputs at the last token, when asked for.
    """

    ranks: torch.Tensor
    probs: torch.Tensor
    heads: torch.Tensor | None = None

    def accuracy(self, k: int = 1) -> float:
        return float((self.ranks < k).float().mean()) if len(self.ranks) else float("nan")

    @property
    def mean_prob(self) -> float:
        return float(self.probs.mean()) if len(self.probs) else float("nan")


@torch.inference_mode()
def score_prompts(
    model: IVModel,
    prompts: EncodedPrompts,
    *,
    vector: torch.Tensor | InstructionVector | None = None,
    layer: int | None = None,
    scale: float | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
    record_heads: bool = False,
    injection: str | None = None,
) -> Scores:
    """Rank and probability of each prompt's answer token at the last position.

    Args:
        vector: optional ``(d_model,)`` vector added after block ``layer`` at the last token, times
            ``scale``; or an :class:`~ivkit.InstructionVector`, injected as it says
            (:meth:`~ivkit.InstructionVector.apply`).
        layer: required with a plain vector; an IV's own layer otherwise.
        scale: the multiplier; default: an IV's own scale, 1 for a plain vector.
        injection: for an IV, ``"residual"`` or ``"heads"``; default: the IV's own (``"residual"``
            when ``layer`` is given).
        record_heads: also return every head's last-token output (the same pass; used by the
            extraction filter so that the mean activations cost nothing extra).
    """
    iv = vector if isinstance(vector, InstructionVector) else None
    if iv is not None:  # checked and resolved once, injected per batch
        iv.check_compatible(model)
        injection, layer = iv.resolve_injection(layer, injection)
        scale = iv.scale if scale is None else scale
    elif vector is not None and layer is None:
        raise InputError("score_prompts: a vector needs a layer")
    scale = 1.0 if scale is None else scale
    g = model.geometry
    ranks = torch.empty(len(prompts), dtype=torch.long)
    probs = torch.empty(len(prompts))
    heads = torch.empty(len(prompts), g.n_layers, g.n_heads, g.d_head) if record_heads else None
    batches = length_batches([len(s) for s in prompts.input_ids], batch_size)
    for idx in progress_bar(batches, desc=desc, progress=progress):
        batch = model.make_batch([prompts.input_ids[i] for i in idx])
        target = prompts.first_token[idx].to(model.device)
        with ExitStack() as stack:
            if iv is not None:
                stack.enter_context(iv._injected(model, injection, layer, scale))
            elif vector is not None:
                stack.enter_context(add_to_residual(model, layer, vector, scale=scale))
            rec = stack.enter_context(record_head_outputs(model)) if record_heads else None
            logits = model.forward(batch)[:, -1]
        if rec is not None:
            heads[idx] = rec.stack().float().cpu()
        tgt_logit = logits.gather(-1, target[:, None])
        ranks[idx] = (logits > tgt_logit).sum(-1).cpu()
        probs[idx] = torch.softmax(logits, -1).gather(-1, target[:, None])[:, 0].cpu()
    return Scores(ranks, probs, heads)


# --------------------------------------------------------------------------------------------
# Layer sweep
# --------------------------------------------------------------------------------------------


@dataclass
class LayerSweep:
    """Accuracy of the prompts with the vector added after each layer, at each scale (and, when
    asked, with the IV's heads patched to ``scale *`` their means: ``injection="heads"``).

    Attributes:
        layers: the layers tried (the vector is added to that block's output); empty when only
            the heads injection was swept.
        scales: the multipliers tried.
        top1: ``[scale][layer]`` top-1 accuracy.
        mean_prob: ``[scale][layer]`` mean probability of the answer token.
        baseline_top1, baseline_prob: the same with no vector.
        n: number of prompts.
        split: which split the prompts came from (``"valid"`` when choosing).
        method: ``"fast"`` (last-position continuation) or ``"naive"`` (a full pass per cell).
        heads_top1, heads_prob: ``[scale]`` top-1 and mean probability with ``injection="heads"``,
            or None when it was not tried.
    """

    layers: list[int]
    scales: list[float]
    top1: list[list[float]]
    mean_prob: list[list[float]]
    baseline_top1: float
    baseline_prob: float
    n: int
    split: str = "valid"
    method: str = "fast"
    seconds: float = 0.0
    heads_top1: list[float] | None = None
    heads_prob: list[float] | None = None
    fast_unavailable: str | None = None

    def cells(self) -> list[dict[str, Any]]:
        """Every cell tried: ``{"injection", "layer" (None for heads), "scale", "top1", "mean_prob"}``."""
        out = [{"injection": "residual", "layer": l, "scale": sc, "top1": self.top1[si][li],
                "mean_prob": self.mean_prob[si][li]}
               for si, sc in enumerate(self.scales) for li, l in enumerate(self.layers)]
        if self.heads_top1 is not None:
            out += [{"injection": "heads", "layer": None, "scale": sc, "top1": self.heads_top1[si],
                     "mean_prob": self.heads_prob[si]} for si, sc in enumerate(self.scales)]
        return out

    def best(self) -> dict[str, Any]:
        """The chosen cell: highest top-1 accuracy; ties go to the higher mean probability, then
        residual injection (the reference recipe) over heads, then the smaller scale, then the
        lower layer."""
        cells = self.cells()
        if not cells:
            raise InputError("the sweep tried no cell")
        return max(cells, key=lambda c: (c["top1"], c["mean_prob"], c["injection"] == "residual", -c["scale"],
                                         -(c["layer"] or 0)))

    @property
    def best_injection(self) -> str:
        return self.best()["injection"]

    @property
    def best_layer(self) -> int | None:
        """The chosen cell's layer (see :meth:`best`); None when the heads injection won."""
        return self.best()["layer"]

    @property
    def best_scale(self) -> float:
        return self.best()["scale"]

    @property
    def best_top1(self) -> float:
        return self.best()["top1"]

    @property
    def best_prob(self) -> float:
        return self.best()["mean_prob"]

    def to_pandas(self):
        """One row per cell: ``injection, scale, layer, top1, mean_prob`` (layer None for heads)."""
        import pandas as pd

        return pd.DataFrame([{k: c[k] for k in ("injection", "scale", "layer", "top1", "mean_prob")}
                             for c in self.cells()])

    def to_dict(self) -> dict[str, Any]:
        out = {"layers": self.layers, "scales": self.scales, "top1": self.top1, "mean_prob": self.mean_prob,
               "baseline_top1": self.baseline_top1, "baseline_prob": self.baseline_prob, "n": self.n,
               "split": self.split, "method": self.method, "best_layer": self.best_layer,
               "best_scale": self.best_scale, "best_top1": self.best_top1, "seconds": self.seconds}
        if self.heads_top1 is not None:
            out.update(heads_top1=self.heads_top1, heads_prob=self.heads_prob, best_injection=self.best_injection)
        if self.fast_unavailable:
            out["fast_unavailable"] = self.fast_unavailable
        return out

    def plot(self, title: str | None = None):
        from .plotting import plot_layer_sweep

        return plot_layer_sweep(self, title=title)


def _sweep_naive(model, vector, prompts, layers, scales, batch_size, progress):
    top1 = [[0.0] * len(layers) for _ in scales]
    mprob = [[0.0] * len(layers) for _ in scales]
    cells = [(si, li) for si in range(len(scales)) for li in range(len(layers))]
    for si, li in progress_bar(cells, desc="layer sweep", progress=progress):
        sc = score_prompts(model, prompts, vector=vector, layer=layers[li], scale=scales[si], batch_size=batch_size)
        top1[si][li], mprob[si][li] = sc.accuracy(1), sc.mean_prob
    return top1, mprob


@torch.inference_mode()
def _sweep_fast(model, vector, prompts, layers, scales, progress, max_memory_mb, guard_tol=1e-4):
    """All (layer, scale) cells by continuation: adding the vector at the last position changes
    only that position, so each cell re-runs one position from the layer above up."""
    from .blockcall import FastPathUnsupported
    from .fast import RowGroup, _final_logits, _prompts_per_pass, continue_rows, logits_rows_for, run_prefix

    g = model.geometry
    n_cells = len(layers) * len(scales)
    per_pass = max(1, _prompts_per_pass(model, max(len(x) for x in prompts.input_ids), 1, max_memory_mb)
                   * (g.n_total_heads + 1) // (n_cells + 1))
    hits = torch.zeros(len(scales), len(layers))
    psum = torch.zeros(len(scales), len(layers))
    base_hits = base_p = 0.0
    sc = torch.tensor(scales, dtype=model.dtype, device=model.device)
    v = vector.to(model.device, model.dtype)
    chunk = logits_rows_for(model, 1, max_memory_mb)
    batches = length_batches([len(x) for x in prompts.input_ids], per_pass)
    for idx in progress_bar(batches, desc="layer sweep", progress=progress):
        run = run_prefix(model, [prompts.input_ids[i] for i in idx], 1)
        P = len(idx)
        target = prompts.first_token[idx].to(model.device)
        groups = [RowGroup(0, run.block_in[0][:, None])]
        for l in layers:
            h = run.block_in[l + 1][:, None] + sc[None, :, None, None] * v     # (P, n_scales, 1, d)
            groups.append(RowGroup(l + 1, h))
        rows = torch.cat(continue_rows(run, groups), dim=1)                   # (P, 1 + n_cells, 1, d)
        tgt_rows = target.repeat_interleave(rows.shape[1])[:, None]
        flat = rows.flatten(0, 1)
        out = torch.empty(flat.shape[0], 2)                                  # rank, prob per row
        for a in range(0, flat.shape[0], chunk):
            lg = _final_logits(model, flat[a:a + chunk])[:, -1]
            t = tgt_rows[a:a + chunk]
            out[a:a + chunk, 0] = (lg > lg.gather(-1, t)).sum(-1).float().cpu()
            out[a:a + chunk, 1] = torch.softmax(lg, -1).gather(-1, t)[:, 0].cpu()
        out = out.view(P, -1, 2)
        full_prob = torch.softmax(run.logits[:, -1], -1).gather(-1, target[:, None])[:, 0].cpu()
        err = (out[:, 0, 1] - full_prob).abs().max().item()
        if not err <= guard_tol:
            raise FastPathUnsupported(f"the unsteered continuation differs from the full pass by {err:.2e}")
        base_hits += float((out[:, 0, 0] == 0).sum())
        base_p += float(out[:, 0, 1].sum())
        cells = out[:, 1:].view(P, len(layers), len(scales), 2)
        hits += (cells[..., 0] == 0).float().sum(0).T
        psum += cells[..., 1].sum(0).T
    n = len(prompts)
    return (hits / n).tolist(), (psum / n).tolist(), base_hits / n, base_p / n


def layer_sweep(
    model: IVModel,
    vector: torch.Tensor | InstructionVector,
    prompts: EncodedPrompts,
    *,
    layers: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    scale: float | None = None,
    method: str | None = None,
    batch_size: int = 32,
    max_memory_mb: float = 1024.0,
    progress: bool = True,
    split: str = "valid",
    injections: Sequence[str] = ("residual",),
) -> LayerSweep:
    """Score ``prompts`` with the vector added after each layer in ``layers`` (default: all),
    at each multiplier in ``scales``; with ``"heads"`` in ``injections`` (``vector`` must then be
    an IV), also with the IV's heads patched to ``scale *`` their means, one cell per scale.

    ``method="fast"`` re-runs only the last position from the layer above up (exact; it falls
    back to ``"naive"``, a full pass per cell, where the model does not allow it). The default,
    ``None``, is ``"fast"`` where the backend can run it (torch, local nnsight) and ``"naive"``
    (through the backend) on the others.
    ``scale=x`` is shorthand for ``scales=(x,)``.
    """
    from .blockcall import FastPathUnsupported
    from .vectors import INJECTIONS

    t0 = time.perf_counter()
    injections = list(injections)
    if not injections or set(injections) - set(INJECTIONS):
        raise InputError(f"injections must be a non-empty subset of {INJECTIONS}, got {injections}")
    iv = vector if isinstance(vector, InstructionVector) else None
    if iv is not None:
        iv.check_compatible(model)
        vector = iv.vector
    elif "heads" in injections:
        raise InputError("the heads injection needs an InstructionVector (its heads and their means), "
                         "not a plain vector")
    if scale is not None:
        scales = (scale,)
    scales = [float(x) for x in scales]
    heads_top1 = heads_prob = None
    if "heads" in injections:
        heads_top1, heads_prob = [], []
        for sc in progress_bar(scales, desc="heads sweep", progress=progress):
            s = score_prompts(model, prompts, vector=iv, scale=sc, injection="heads", batch_size=batch_size)
            heads_top1.append(s.accuracy(1))
            heads_prob.append(s.mean_prob)
        if "residual" not in injections:
            base = score_prompts(model, prompts, batch_size=batch_size)
            return LayerSweep([], scales, [[] for _ in scales], [[] for _ in scales], base.accuracy(1),
                              base.mean_prob, len(prompts), split, "naive", time.perf_counter() - t0,
                              heads_top1, heads_prob)
    layers = list(range(model.geometry.n_layers)) if layers is None else list(layers)
    if method is None:
        method = "fast" if model.backend.supports_fast else "naive"
    elif method == "fast" and not model.backend.supports_fast:
        log.info("the fast layer sweep needs the Hugging Face modules (torch backend, or nnsight locally); "
                 "sweeping through %s with a full pass per cell", model.backend.name)
        method = "naive"
    used, note = method, None
    if method == "fast":
        try:
            top1, mprob, b1, bp = _sweep_fast(model, vector, prompts, layers, scales, progress, max_memory_mb)
        except FastPathUnsupported as e:
            log.warning("fast layer sweep unavailable for %s (%s); running a full pass per cell", model.model_type, e)
            used, note = "naive", str(e)
    elif method != "naive":
        raise InputError(f"unknown sweep method {method!r}; use fast or naive")
    if used == "naive":
        base = score_prompts(model, prompts, batch_size=batch_size)
        b1, bp = base.accuracy(1), base.mean_prob
        top1, mprob = _sweep_naive(model, vector, prompts, layers, scales, batch_size, progress)
    return LayerSweep(layers, scales, top1, mprob, b1, bp, len(prompts), split, used, time.perf_counter() - t0,
                      heads_top1, heads_prob, note)


# --------------------------------------------------------------------------------------------
# The six-condition evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Accuracies of :func:`evaluate_iv`.

    Attributes:
        results: condition -> ``{"top1", "top1_lo", "top1_hi", "top2", "top3", "mean_prob",
            "top1_icl_correct", "top1_icl_correct_lo", "top1_icl_correct_hi"}``: ``_lo``/``_hi``
            bound the 95% Wilson interval (:func:`wilson_interval`); ``top1_icl_correct`` is top-1
            on the queries clean few-shot answers right (None when there are none or
            ``few_shot`` was not run).
        layer: injection layer used (None with ``injection="heads"``).
        n: number of test queries (the same in every condition).
        info: task, model, seed, shots, scale, injection, seconds.
        n_icl_correct: how many of the ``n`` queries clean few-shot answers right (None when
            ``few_shot`` was not run).
    """

    results: dict[str, dict[str, float]]
    layer: int | None
    n: int
    info: dict[str, Any] = field(default_factory=dict)
    n_icl_correct: int | None = None

    def __getitem__(self, condition: str) -> float:
        return self.results[condition]["top1"]

    def to_dict(self) -> dict[str, Any]:
        """Flat top-1 accuracies (``zero_shot`` ... ``random_control``), ``layer``, ``n``; the
        top-1 accuracies on the queries clean few-shot gets right under ``icl_correct`` (with
        ``n_icl_correct``); the 95% intervals of both under ``ci95`` and ``icl_correct_ci95``
        (``[lo, hi]`` per condition); the top-2/top-3 accuracies and mean probabilities under ``detail``.
        NaN becomes None, so the result is strict JSON."""
        out: dict[str, Any] = {c: self.results[c]["top1"] for c in CONDITIONS if c in self.results}
        out.update(layer=self.layer, n=self.n, n_icl_correct=self.n_icl_correct,
                   icl_correct={c: _json_float(r.get("top1_icl_correct")) for c, r in self.results.items()},
                   ci95={c: _ci(r, "top1") for c, r in self.results.items()},
                   icl_correct_ci95={c: _ci(r, "top1_icl_correct") for c, r in self.results.items()},
                   detail={c: {k: _json_float(v) for k, v in r.items()} for c, r in self.results.items()},
                   **self.info)
        return out

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([{"condition": c, **v} for c, v in self.results.items()])

    def plot(self, title: str | None = None):
        from .plotting import plot_evaluation

        return plot_evaluation(self, title=title)


def evaluation_prompts(model: IVModel, task: Task | str, *, n_prompts: int = 100, shots: int = 10, seed: int = 0,
                 template: PromptTemplate = DEFAULT_TEMPLATE, split: TaskSplit | None = None
                 ) -> dict[str, EncodedPrompts]:
    """The evaluation's prompts: ``zero_shot``, ``shuffled`` and ``few_shot`` prompts for the same
    test queries (the first ``n_prompts`` of a seeded order), in the same order."""
    task = load_task(task)
    split = split or task.split(seed)
    common = dict(demo_pool=split.train, shots=shots, n=n_prompts, seed=seed, template=template, stream=7)
    sets = {style: encode_prompts(model, sample_prompts(split.test, style=style, **common))
            for style in ("zero_shot", "shuffled", "few_shot")}
    # Keep only queries usable in every style, in the same order.
    keep = set.intersection(*({p.query for p in e.prompts} for e in sets.values()))
    return {style: enc.subset([i for i, p in enumerate(enc.prompts) if p.query in keep]) for style, enc in sets.items()}


def iv_protocol(iv: InstructionVector, task: Task, *, seed: int | None = None, shots: int | None = None,
                template: PromptTemplate | None = None) -> tuple[int, int, PromptTemplate]:
    """The seed, shots and template to evaluate ``iv`` with: the given ones, else those it was
    extracted with (``iv.json``), else the defaults (0, 10, ``Q:/A:``). Warns when a given seed
    differs from the IV's on the IV's own task: that seed's test split may overlap the queries the
    IV was built and its layer chosen on."""
    meta = iv.meta
    own = meta.get("seed")
    if seed is None:
        seed = int(own) if own is not None else 0
    elif own is not None and int(own) != int(seed) and meta.get("task") == task.name:
        log.warning("evaluating with seed %d, but the IV was extracted with seed %d: the test split of seed %d "
                    "may share queries with the training and validation splits the IV was built and its layer "
                    "chosen on. Leave the seed out to use the IV's", seed, int(own), seed)
    if shots is None:
        shots = int(meta.get("shots") or 10)
    if template is None:
        template = PromptTemplate.from_dict(meta["template"]) if isinstance(meta.get("template"), dict) \
            else DEFAULT_TEMPLATE
    return seed, shots, template


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion ``successes / n`` at ``confidence``
    (two-sided), or None when ``n`` is 0. Unlike the normal approximation it stays inside [0, 1]
    and is not empty at 0 or ``n`` successes."""
    if n < 0 or not 0 <= successes <= n:
        raise InputError(f"wilson_interval: need 0 <= successes <= n, got {successes} of {n}")
    if not 0 < confidence < 1:
        raise InputError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _top1_metrics(ranks: torch.Tensor, prefix: str = "top1") -> dict[str, float | None]:
    """``{prefix: accuracy, prefix_lo, prefix_hi}`` for ranks ``(n,)`` (all None when n is 0)."""
    n, right = len(ranks), int((ranks == 0).sum())
    ci = wilson_interval(right, n)
    return {prefix: float((ranks == 0).float().mean()) if n else None, f"{prefix}_lo": ci[0] if ci else None,
            f"{prefix}_hi": ci[1] if ci else None}


def _metrics(s: Scores) -> dict[str, float]:
    return {**_top1_metrics(s.ranks), "top2": s.accuracy(2), "top3": s.accuracy(3), "mean_prob": s.mean_prob}


def _json_float(x: float | None) -> float | None:
    return None if x is None or x != x else x


def _ci(r: dict[str, Any], prefix: str) -> list[float] | None:
    lo, hi = r.get(f"{prefix}_lo"), r.get(f"{prefix}_hi")
    return None if lo is None or hi is None else [lo, hi]


def evaluate_iv(
    model: IVModel,
    task: Task | str,
    iv: InstructionVector,
    *,
    layer: int | None = None,
    n_prompts: int = 100,
    shots: int | None = None,
    seed: int | None = None,
    scale: float | None = None,
    template: PromptTemplate | None = None,
    split: TaskSplit | None = None,
    batch_size: int = 16,
    progress: bool = True,
    conditions: Sequence[str] = CONDITIONS,
    injection: str | None = None,
) -> Evaluation:
    """Top-1/2/3 first-token accuracy on the test split in the six :data:`CONDITIONS` (or the
    subset named in ``conditions``).

    Args:
        task: the task (its seeded split gives the test queries and the demonstrations).
        iv: the instruction vector; ``layer``, ``scale`` and ``injection`` default to the ones it
            carries (a given ``layer`` means residual injection there).
        n_prompts: at most this many test queries.
        shots: demonstrations in the few-shot conditions; default: the IV's (10).
        seed: seeds the split, the query order, the demonstrations, the shuffles and the random
            control, so the same seed gives the same numbers. Default: the seed the IV was
            extracted with, so that the test split is disjoint from the queries it was built
            and its layer chosen on; another seed logs a warning.
        template: the prompt template; default: the IV's.
        injection: ``"residual"`` or ``"heads"`` (see :meth:`~ivkit.InstructionVector.apply`).

    The random control injects the same way with random directions of the same norms: a random
    ``(d_model,)`` vector of the IV's norm (residual), or each head set to a random direction of
    its mean's norm (heads); see :meth:`~ivkit.InstructionVector.with_random_directions`.
    """
    t0 = time.perf_counter()
    task = load_task(task)
    iv.check_compatible(model)
    seed, shots, template = iv_protocol(iv, task, seed=seed, shots=shots, template=template)
    injection, layer = iv.resolve_injection(layer, injection)
    scale = iv.scale if scale is None else scale
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise InputError(f"unknown conditions {sorted(unknown)}; choose from {CONDITIONS}")
    sets = evaluation_prompts(model, task, n_prompts=n_prompts, shots=shots, seed=seed, template=template, split=split)
    control = iv.with_random_directions(seed)  # its vector is random_like(iv, seed)
    runs = {
        "zero_shot": ("zero_shot", None),
        "zero_shot_iv": ("zero_shot", iv),
        "shuffled": ("shuffled", None),
        "shuffled_iv": ("shuffled", iv),
        "few_shot": ("few_shot", None),
        "random_control": ("zero_shot", control),
    }
    results, scores = {}, {}
    for cond in progress_bar([c for c in CONDITIONS if c in conditions], desc="evaluate", progress=progress):
        style, vec = runs[cond]
        s = score_prompts(model, sets[style], vector=vec, layer=layer if vec is not None else None, scale=scale,
                          injection=injection if vec is not None else None, batch_size=batch_size)
        results[cond], scores[cond] = _metrics(s), s
    # The reference protocol: accuracy on the queries the model answers right with clean shots.
    icl_right = scores["few_shot"].ranks == 0 if "few_shot" in scores else None
    for cond, s in scores.items():
        results[cond].update(_top1_metrics(s.ranks[icl_right] if icl_right is not None else s.ranks[:0],
                                           "top1_icl_correct"))
    info = {"task": task.name, "model": model.name, "seed": seed, "shots": shots, "scale": scale,
            "injection": injection, "k": iv.k, "seconds": round(time.perf_counter() - t0, 2)}
    return Evaluation(results, layer, len(sets["zero_shot"]), info,
                      int(icl_right.sum()) if icl_right is not None else None)
