"""Conjugate-prompting results: in-context rates per model and transform, and how much of the
fine-tuning drop each transform recovers.

* Every rate carries its 95% Wilson interval (`ivkit.core.stats.wilson_interval`).
* **Recovery** of a transform ``s``:
  ``(conjugate tuned - plain tuned) / (plain base - plain tuned)``, the share of the tuned model's
  drop in in-context rate that prompting through ``s`` wins back (1: all of it; 0: none). Its
  interval is a paired bootstrap over prompts (the same items are resampled in all three runs;
  2000 resamples, seeded). When the bootstrap interval of the denominator (the drop) includes 0
  there is no measurable drop to recover, and the recovery is reported as **undefined**.
"""

from __future__ import annotations

import html
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.html import table
from ..core.stats import wilson_interval
from .plots import grouped_bars
from .probe import OUTCOMES, ProbeRun


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """``(rate, lo, hi)``; NaNs when ``n`` is 0."""
    ci = wilson_interval(k, n)
    return (k / n, ci[0], ci[1]) if ci is not None else (math.nan, math.nan, math.nan)


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.2f}"


@dataclass(frozen=True)
class Recovery:
    """How much of the drop a treatment (a transform, or an injected IV) wins back.

    Attributes:
        treatment: the transform's name (or ``iv``).
        task: the in-context task, or ``all``.
        n: the prompts (paired across the three runs).
        drop: plain base - plain tuned in-context rate, with its bootstrap interval.
        gain: treated tuned - plain tuned, with its bootstrap interval.
        value: gain / drop, with its bootstrap interval; NaN when undefined.
        defined: False when the drop's interval includes 0.
    """

    treatment: str
    task: str
    n: int
    drop: tuple[float, float, float]
    gain: tuple[float, float, float]
    value: tuple[float, float, float]
    defined: bool

    def to_dict(self) -> dict[str, Any]:
        d, g, v = self.drop, self.gain, self.value
        return {"treatment": self.treatment, "task": self.task, "n": self.n, "drop": d[0], "drop_lo": d[1],
                "drop_hi": d[2], "gain": g[0], "gain_lo": g[1], "gain_hi": g[2], "recovery": v[0],
                "recovery_lo": v[1], "recovery_hi": v[2], "defined": self.defined}

    def __str__(self) -> str:
        d, g, v = self.drop, self.gain, self.value
        rec = (f"recovery {_fmt(v[0])} [{_fmt(v[1])}, {_fmt(v[2])}]" if self.defined else
               "recovery undefined (the drop's interval includes 0)")
        return (f"{self.treatment} on {self.task} (n={self.n}): drop {_fmt(d[0])} [{_fmt(d[1])}, {_fmt(d[2])}], "
                f"gain {_fmt(g[0])} [{_fmt(g[1])}, {_fmt(g[2])}], {rec}")

    __repr__ = __str__


def bootstrap_recovery(base: Sequence[float], tuned: Sequence[float], treated: Sequence[float], *,
                       treatment: str, task: str, n_boot: int = 2000, seed: int = 0) -> Recovery:
    """`Recovery` from per-prompt 0/1 in-context outcomes, paired by position: plain base,
    plain tuned, treated tuned. Resamples prompts ``n_boot`` times (seeded by ``seed``, the
    treatment and the task); 95% percentile intervals."""
    b, t, c = (np.asarray(x, dtype=float) for x in (base, tuned, treated))
    if not (len(b) == len(t) == len(c)) or len(b) == 0:
        raise InputError(f"bootstrap_recovery needs three equally long, non-empty outcome lists, got "
                         f"{len(b)}, {len(t)}, {len(c)}")
    rng = np.random.default_rng([seed, zlib.crc32(f"{treatment}/{task}".encode())])
    idx = rng.integers(0, len(b), size=(n_boot, len(b)))
    drops = b[idx].mean(1) - t[idx].mean(1)
    gains = c[idx].mean(1) - t[idx].mean(1)

    def ci(x: np.ndarray) -> tuple[float, float]:
        lo, hi = np.quantile(x, [0.025, 0.975], method="inverted_cdf")
        return float(lo), float(hi)

    drop, gain = float(b.mean() - t.mean()), float(c.mean() - t.mean())
    d_ci, g_ci = ci(drops), ci(gains)
    defined = d_ci[0] > 0 or d_ci[1] < 0
    if defined:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(drops != 0, gains / np.where(drops != 0, drops, 1.0), np.sign(gains) * np.inf)
        ratios = np.nan_to_num(ratios, nan=0.0)  # 0/0: nothing dropped and nothing won back
        value = (gain / drop, *ci(ratios))
    else:
        value = (math.nan, math.nan, math.nan)
    return Recovery(treatment, task, len(b), (drop, *d_ci), (gain, *g_ci), value, defined)


def outcomes(run: ProbeRun, task: str | None = None) -> dict[tuple[str, int], int]:
    """``{(task, index): 1 if in-context else 0}`` of a run (of one task, if given)."""
    return {(r.task, r.index): int(r.outcome == "in_context") for r in run.records if task in (None, r.task)}


def paired(runs: Sequence[ProbeRun], task: str | None = None) -> list[list[int]]:
    """The in-context outcomes of several runs on the items they all have, in one order."""
    maps = [outcomes(r, task) for r in runs]
    keys = sorted(set.intersection(*(set(m) for m in maps)))
    return [[m[k] for k in keys] for m in maps]


@dataclass(frozen=True)
class ConjugateResult:
    """The probe run on a base model and (optionally) its tuned version, under each transform.

    Attributes:
        base: the base model's label.
        tuned: the tuned model's label, or None.
        runs: the plain-condition `ProbeRun` of every (model, transform).
        seed: seeds the bootstrap.
        n_boot: bootstrap resamples.
        info: provenance (models, versions, settings, seconds).
    """

    base: str
    tuned: str | None
    runs: tuple[ProbeRun, ...]
    seed: int = 0
    n_boot: int = 2000
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tuned is not None and self.tuned == self.base:
            raise InputError(f"the base and tuned models need different labels, both are {self.base!r}")
        stray = {r.model for r in self.runs} - set(self.models)
        if stray:
            raise InputError(f"runs of {sorted(stray)}, which is neither the base ({self.base!r}) nor the tuned model")
        if self.runs and "none" not in {r.transform for r in self.runs}:
            raise InputError("a conjugate result needs the plain prompts (transform 'none') to compare with")

    @property
    def transforms(self) -> list[str]:
        return list(dict.fromkeys(r.transform for r in self.runs))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(rec.task for r in self.runs for rec in r.records))

    @property
    def models(self) -> list[str]:
        return [m for m in (self.base, self.tuned) if m is not None]

    def run(self, model: str, transform: str) -> ProbeRun:
        """The run of ``model`` (a label) under ``transform``."""
        for r in self.runs:
            if r.model == model and r.transform == transform:
                return r
        raise InputError(f"no run of {model!r} under {transform!r}; have "
                         f"{[(r.model, r.transform) for r in self.runs]}")

    def recovery(self, transform: str, task: str | None = None) -> Recovery:
        """The `Recovery` of ``transform`` (on ``task``, or all tasks pooled)."""
        if self.tuned is None:
            raise InputError("recovery needs a tuned model; this result has only the base")
        runs = [self.run(self.base, "none"), self.run(self.tuned, "none"), self.run(self.tuned, transform)]
        b, t, c = paired(runs, task)
        return bootstrap_recovery(b, t, c, treatment=transform, task=task or "all", n_boot=self.n_boot,
                                  seed=self.seed)

    def recoveries(self):
        """One row per (transform other than ``none``, task and ``all``): see `Recovery`."""
        import pandas as pd

        rows = [self.recovery(s, t).to_dict() for s in self.transforms if s != "none"
                for t in [*self.tasks, None]]
        return pd.DataFrame(rows)

    def to_pandas(self):
        """One row per (model, transform, task and ``all``): ``n``; the count, rate and Wilson
        interval of each outcome (``in_context``, ``instruction``, ``neither``) and of ``exact``
        (the output starts with the whole answer, final mark included); ``truncated`` (in-context
        only through the token-budget rule); the mean word ``coverage`` (translations)
        and ``same_task`` (the share of prompts on which the transform commutes with the task)."""
        import pandas as pd

        rows = []
        for r in self.runs:
            role = "base" if r.model == self.base else "tuned"
            for task in [*self.tasks, "all"]:
                recs = [x for x in r.records if task in ("all", x.task)]
                row: dict[str, Any] = {"model": r.model, "role": role, "transform": r.transform, "task": task,
                                       "n": len(recs)}
                for o in OUTCOMES:
                    k = sum(x.outcome == o for x in recs)
                    rate, lo, hi = wilson(k, len(recs))
                    row.update({f"{o}_count": k, o: rate, f"{o}_lo": lo, f"{o}_hi": hi})
                k = sum(x.exact for x in recs)
                rate, lo, hi = wilson(k, len(recs))
                row.update({"exact_count": k, "exact": rate, "exact_lo": lo, "exact_hi": hi})
                cov = [x.coverage for x in recs if x.coverage is not None]
                same = [x.same_task for x in recs if x.same_task is not None]
                row.update(truncated=sum(x.truncated for x in recs), coverage=float(np.mean(cov)) if cov else None,
                           same_task=float(np.mean(same)) if same else None)
                rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, task: str | None = None, title: str | None = None):
        """In-context rate per transform, base against tuned, with Wilson intervals; one panel per
        task and one for all tasks pooled (or only ``task``)."""
        df = self.to_pandas()
        if task is not None:
            df = df[df["task"] == task]
        df = df.assign(label=[m if m == r else f"{m} ({r})" for m, r in zip(df["model"], df["role"])],
                       hover=[f"{k}/{n}" for k, n in zip(df["in_context_count"], df["n"])])
        return grouped_bars(df, x="transform", group="label", y="in_context", lo="in_context_lo",
                            hi="in_context_hi", facet="task", y_range=(0, 1.02), y_title="in-context rate",
                            hover="hover", title=title or f"In-context rate per transform: {' vs '.join(self.models)}")

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "tuned": self.tuned, "seed": self.seed, "n_boot": self.n_boot, "info": self.info,
                "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConjugateResult":
        return cls(d["base"], d.get("tuned"), tuple(ProbeRun.from_dict(r) for r in d["runs"]), int(d["seed"]),
                   int(d["n_boot"]), dict(d.get("info", {})))

    def _repr_html_(self) -> str:
        """The in-context rate per model and transform (all tasks pooled), with intervals."""
        df = self.to_pandas()
        df = df[df["task"] == "all"]
        rows = [{"model": r.model, "transform": r.transform, "n": r.n, "in-context": r.in_context,
                 "95% CI": f"{r.in_context_lo:.2f}-{r.in_context_hi:.2f}", "instruction": r.instruction}
                for r in df.itertuples()]
        head = html.escape(repr(self).splitlines()[0])
        return f"<b>{head}</b>" + table(rows, caption="in-context rate, all tasks pooled", digits=2)

    def __repr__(self) -> str:
        lines = [f"ConjugateResult({' vs '.join(self.models)}; {len(self.tasks)} tasks "
                 f"({', '.join(self.tasks)}), transforms {', '.join(self.transforms)})", "  in-context rate [95% CI]:"]
        for m in self.models:
            cells = []
            for s in self.transforms:
                k, n = self.run(m, s).rate()
                rate, lo, hi = wilson(k, n)
                cells.append(f"{s} {_fmt(rate)} [{_fmt(lo)}, {_fmt(hi)}]")
            lines.append(f"    {m}: " + "; ".join(cells))
        if self.tuned is not None:
            lines += [f"  {self.recovery(s)}" for s in self.transforms if s != "none"]
        return "\n".join(lines)
