"""The six-condition evaluation of an IV on the test split.

* **Evaluation** (`evaluate_iv`), on the test split, same queries in every condition:

  * ``zero_shot``: the query alone
  * ``zero_shot_iv``: the query alone, IV added at the chosen layer
  * ``shuffled``: ``shots`` demonstrations with their labels shuffled
  * ``shuffled_iv``: the same, IV added
  * ``few_shot``: ``shots`` clean demonstrations
  * ``random_control``: the query alone, plus a random vector of the IV's norm

  Each condition also reports ``top1_icl_correct``: its top-1 accuracy on only the test queries
  that clean ``few_shot`` answers right (``n_icl_correct`` of them). This is how the
  function-vectors code reports its zero-shot + FV and shuffled + FV figures (it evaluates on the
  queries the model gets right in context), so it is the number to compare with those; the plain
  ``top1`` is over every test query.
* **Sampling noise**: with 100 test queries one query moves an accuracy by 0.01, and the 95%
  interval around 0.70 is 0.60-0.78. Every top-1 figure comes with its Wilson score
  interval (``top1_lo``/``top1_hi``, and ``top1_icl_correct_lo``/``_hi``; `wilson_interval`).
  Evaluate on the whole test split (``n_prompts`` at least its size) for the tightest figures.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..core.errors import InputError
from ..core.html import table
from ..core.io import progress_bar
from ..core.options import Injection
from ..core.plots import accuracy_bars
from ..core.prompts import DEFAULT_TEMPLATE, EncodedPrompts, PromptTemplate, encode_prompts, sample_prompts
from ..core.stats import wilson_interval
from ..core.tasks import Task, TaskSplit, load_task
from ..models.model import IVModel
from ..vectors import InstructionVector
from .scoring import Scores, score_prompts

log = logging.getLogger(__name__)

CONDITIONS = ("zero_shot", "zero_shot_iv", "shuffled", "shuffled_iv", "few_shot", "random_control")


# --------------------------------------------------------------------------------------------
# The six-condition evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Accuracies of `evaluate_iv`.

    Attributes:
        results: condition -> ``{"top1", "top1_lo", "top1_hi", "top2", "top3", "mean_prob",
            "top1_loose", "top1_loose_lo", "top1_loose_hi", "top1_icl_correct",
            "top1_icl_correct_lo", "top1_icl_correct_hi"}``: ``_lo``/``_hi`` bound the 95% Wilson
            interval (`wilson_interval`); ``top1_loose`` counts the most likely token as right
            when it is the answer's first token up to case and spaces (right in content, whatever
            the format: it tells a lost skill from a changed format); ``top1_icl_correct`` is top-1
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
                   loose={c: _json_float(r.get("top1_loose")) for c, r in self.results.items()},
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
        """Bars of top-1/2/3 accuracy per condition, the top-1 bars with their 95% intervals."""
        where = "heads injection" if self.info.get("injection") == "heads" else f"IV at layer {self.layer}"
        return accuracy_bars(self.to_pandas(), title=title or f"{self.info.get('task', '')}: {where}, n={self.n}")

    def _repr_html_(self) -> str:
        rows = [{"condition": c, "top1": r["top1"], "95% CI": f"{r['top1_lo']:.2f}-{r['top1_hi']:.2f}",
                 "loose": r.get("top1_loose"), "top2": r["top2"], "top3": r["top3"],
                 "top1 on ICL-right": r.get("top1_icl_correct")} for c, r in self.results.items()]
        return f"<b>{html.escape(repr(self))}</b>" + table(rows)

    def __repr__(self) -> str:
        cells = ", ".join(f"{c} {r['top1']:.2f}" for c, r in self.results.items())
        return f"Evaluation({self.info.get('task')!r}, n={self.n}: {cells})"


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


def _top1_metrics(ranks: torch.Tensor, prefix: str = "top1") -> dict[str, float | None]:
    """``{prefix: accuracy, prefix_lo, prefix_hi}`` for ranks ``(n,)`` (all None when n is 0)."""
    n, right = len(ranks), int((ranks == 0).sum())
    ci = wilson_interval(right, n)
    return {prefix: float((ranks == 0).float().mean()) if n else None, f"{prefix}_lo": ci[0] if ci else None,
            f"{prefix}_hi": ci[1] if ci else None}


def _metrics(s: Scores, loose: torch.Tensor) -> dict[str, float]:
    """Top-1 (with its interval), top-2/3, mean probability, and ``top1_loose``: the most likely
    token is the answer's first token up to case and spaces (`Scores.loose_hits`)."""
    return {**_top1_metrics(s.ranks), "top2": s.accuracy(2), "top3": s.accuracy(3), "mean_prob": s.mean_prob,
            **_top1_metrics(torch.where(loose, 0, 1), "top1_loose")}


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
    injection: Injection | None = None,
) -> Evaluation:
    """Top-1/2/3 first-token accuracy on the test split in the six `CONDITIONS` (or the
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
        injection: ``"residual"`` or ``"heads"`` (see `apply`).

    The random control injects the same way with random directions of the same norms: a random
    ``(d_model,)`` vector of the IV's norm (residual), or each head set to a random direction of
    its mean's norm (heads); see `with_random_directions`.
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
        results[cond], scores[cond] = _metrics(s, s.loose_hits(model.tokenizer, sets[style])), s
    # The reference protocol: accuracy on the queries the model answers right with clean shots.
    icl_right = scores["few_shot"].ranks == 0 if "few_shot" in scores else None
    for cond, s in scores.items():
        results[cond].update(_top1_metrics(s.ranks[icl_right] if icl_right is not None else s.ranks[:0],
                                           "top1_icl_correct"))
    info = {"task": task.name, "model": model.name, "seed": seed, "shots": shots, "scale": scale,
            "injection": injection, "k": iv.k, "seconds": round(time.perf_counter() - t0, 2)}
    return Evaluation(results, layer, len(sets["zero_shot"]), info,
                      int(icl_right.sum()) if icl_right is not None else None)
