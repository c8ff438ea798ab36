"""What fine-tuning does to in-context regression, measured where the answer is known.

The unit of measurement is a *prompt*: held-out prompts (their seeds never meet the training
batches'), each with ``n_points`` pairs, so one forward pass scores the prediction at every
number of examples ``0 .. n_points - 1``. Every number below is a mean over prompts with a 95%
interval over prompts (t intervals for means and paired differences of means, bootstrap
intervals for ratios and for stratified differences).

* `measure_losses` runs models (e.g. ``{"pretrained": ..., "fine-tuned": ...}``), each
  with every label scale ``alpha`` of the conjugate (labels times ``alpha``, prediction divided
  by ``alpha``), and the Bayes-optimal references of `ivkit.synthetic.bayes`, and keeps
  every squared error in a `PromptLosses` (save it, load it, derive the results):
* `PromptLosses.curves` -> `LossCurves`: loss against the number of examples;
* `PromptLosses.by_distance` -> `DistanceProfile`: the loss increase from
  fine-tuning (and what the conjugate leaves of it) against the distance of the true ``w`` to the
  discrete set, plus near-minus-far at matched ``||w||``;
* `conjugate_sweep` -> `ConjugateSweep`: loss against ``alpha``, ``alpha`` chosen on
  validation prompts and reported on test prompts;
* `implied_prior` -> `ImpliedPrior`: the weight of the discrete prior with which the
  Bayes mixture predicts most like each model (the model's "which prior" inference, in one
  number).

Gotchas
-------
* The distance to the discrete set and ``||w||`` are correlated (far points are mostly long
  vectors, whose errors are larger at few examples), so loss against distance mixes the two;
  `PromptLosses.by_distance` therefore also reports near-minus-far within quartiles of
  ``||w||``.
* The squared error includes the label noise (``sigma^2`` per prediction): no predictor goes
  below ``noise**2``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor

from ..core.errors import ArtifactError, InputError
from ..core.io import atomic_save_safetensors
from ..core.options import check_at_least, check_choice, check_finite
from .bayes import Predictor, bayes_predictions
from .data import Prior, RegressionPrompts, RegressionTask, distance_to_discrete, sample_prompts, seeded_generator
from .model import RegressionGPT2

Split = Literal["validation", "test"]
REFERENCE_NAMES = {"zero": "zero predictor", "ridge": "ridge (continuous Bayes)",
                   "discrete": "discrete Bayes", "mixture": "mixture Bayes"}


# --------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the t interval of the mean of ``values`` (one per prompt)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise InputError("mean_interval got no values")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def weighted_mean(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Means of ``a`` (one value per prompt, ``(n,)``, or ``(n, k)``) under each row of bootstrap
    weights ``w`` ``(draws, n)``: ``(draws,)`` or ``(draws, k)``."""
    return (w @ a) / w.sum(axis=1).reshape((-1,) + (1,) * (a.ndim - 1))


def ratio_of_gains(w: np.ndarray, base: np.ndarray, new: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``(mean(base) - mean(new)) / (mean(base) - mean(ref))`` under each row of weights: the share
    of the gap between ``base`` and ``ref`` that ``new`` closes (NaN where the gap is 0)."""
    b = weighted_mean(w, base)
    gap = b - weighted_mean(w, ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap != 0, (b - weighted_mean(w, new)) / np.where(gap != 0, gap, 1.0), np.nan)


def bootstrap_interval(stat, arrays: Sequence[np.ndarray], *, n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """``(estimate, lo, hi)``: the percentile bootstrap interval over prompts, seeded.

    ``stat(w, *arrays)`` computes the statistic from per-prompt ``arrays`` (first axis: prompts)
    under each row of resampling weights ``w`` ``(draws, n)`` (how often each prompt is drawn) and
    returns ``(draws,)``; use `weighted_mean` inside it. The estimate is ``stat`` with every
    weight 1. All draws are computed at once.
    """
    n = len(arrays[0])
    if n == 0:
        raise InputError("bootstrap_interval got no prompts")
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    point = float(np.asarray(stat(np.ones((1, n)), *arrays)).reshape(-1)[0])
    draws = np.asarray(stat(w, *arrays), dtype=float).reshape(-1)
    if np.isnan(draws).all():
        return point, float("nan"), float("nan")
    lo, hi = np.nanquantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return point, float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# Prompts and predictions
# --------------------------------------------------------------------------------------------


def eval_prompts(task: RegressionTask, n_prompts: int, prior: Prior, split: Split = "test", *,
                 seed: int = 0) -> RegressionPrompts:
    """Held-out prompts for measuring (their stream is separate from every training batch's)."""
    check_choice("split", split, Split)
    return sample_prompts(task, n_prompts, prior, seeded_generator("eval", prior, split, seed))


@torch.no_grad()
def predict(net: RegressionGPT2, prompts: RegressionPrompts, *, alpha: float = 1.0,
            batch_size: int = 512) -> Float[Tensor, "batch n"]:
    """The network's predictions at every position, through the conjugate with label scale
    ``alpha`` (``alpha=1``: the prompts as they are): ``net(x, alpha * y) / alpha``."""
    scaled = prompts.scaled(alpha)
    net.eval()
    outs = [net(scaled.xs[i:i + batch_size], scaled.ys[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
    return torch.cat(outs) / alpha


def condition_name(model: str, alpha: float) -> str:
    """The name a model's losses are stored under: ``"fine-tuned"``, ``"fine-tuned x2"``."""
    return model if alpha == 1.0 else f"{model} x{alpha:g}"


@dataclass(frozen=True, eq=False)
class PromptLosses:
    """Squared errors of every condition on one set of prompts.

    Attributes:
        prior: the prior the prompts were drawn from.
        errors: condition name -> ``(n_prompts, n_points)`` squared errors (position ``i``: the
            prediction from ``i`` examples).
        distance: ``(n_prompts,)`` distance of each prompt's ``w`` to the discrete set.
        norm: ``(n_prompts,)`` ``||w||``.
    """

    prior: str
    errors: dict[str, np.ndarray] = field(repr=False)
    distance: np.ndarray = field(repr=False)
    norm: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        p, n = next(iter(self.errors.values())).shape
        return f"PromptLosses({self.prior} prompts: {p}, positions 0..{n - 1}, conditions {list(self.errors)})"

    def window(self, name: str, examples: tuple[int, int]) -> np.ndarray:
        """Per prompt, the mean squared error of ``name`` over ``examples = (lo, hi)`` (inclusive)."""
        if name not in self.errors:
            raise InputError(f"no condition {name!r}: have {', '.join(self.errors)}")
        lo, hi = examples
        n = self.errors[name].shape[1]
        if not 0 <= lo <= hi < n:
            raise InputError(f"examples={examples}: the prompts have positions 0..{n - 1}")
        return self.errors[name][:, lo:hi + 1].mean(axis=1)

    def save(self, path: str | Path) -> None:
        """Write as safetensors (the arrays) with the prior in the metadata."""
        tensors = {f"errors/{k}": torch.from_numpy(v) for k, v in self.errors.items()}
        tensors.update(distance=torch.from_numpy(self.distance), norm=torch.from_numpy(self.norm))
        atomic_save_safetensors(Path(path), tensors, metadata={"prior": self.prior, "order": json.dumps(list(self.errors))})

    @classmethod
    def load(cls, path: str | Path) -> "PromptLosses":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            flat = load_file(str(path))
            order = json.loads(meta["order"])
            errors = {k: flat[f"errors/{k}"].numpy() for k in order}
            return cls(meta["prior"], errors, flat["distance"].numpy(), flat["norm"].numpy())
        except (OSError, KeyError, ValueError, SafetensorError) as e:
            raise ArtifactError(f"{path} is not a saved PromptLosses ({e}): delete it to measure again") from None

    def curves(self, conditions: Sequence[str] | None = None) -> "LossCurves":
        """Loss against the number of examples for ``conditions`` (default: all)."""
        rows = []
        for name in conditions or list(self.errors):
            err = self.errors[name]
            for n in range(err.shape[1]):
                m, lo, hi = mean_interval(err[:, n])
                rows.append({"prior": self.prior, "condition": name, "examples": n, "mse": m, "lo": lo, "hi": hi})
        return LossCurves(tuple(rows), n_prompts=len(self.distance))

    def by_distance(self, *, before: str = "pretrained", after: str = "fine-tuned", conjugate: str | None = None,
                    examples: tuple[int, int] = (1, 40), bins: int = 5, seed: int = 0) -> "DistanceProfile":
        """The increase ``after - before`` (and ``conjugate - before``) of the per-prompt loss over
        ``examples``, in ``bins`` quantile bins of the distance to the discrete set."""
        check_at_least("bins", bins, 1)
        diffs = {f"{after} - {before}": self.window(after, examples) - self.window(before, examples)}
        if conjugate:
            diffs[f"{conjugate} - {before}"] = self.window(conjugate, examples) - self.window(before, examples)
        edges = np.quantile(self.distance, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, self.distance, side="right") - 1, 0, bins - 1)
        rows = []
        for b in range(bins):
            sel = which == b
            for name, d in diffs.items():
                m, lo, hi = mean_interval(d[sel])
                rows.append({"bin": b, "distance": float(self.distance[sel].mean()), "norm": float(self.norm[sel].mean()),
                             "quantity": name, "mean": m, "lo": lo, "hi": hi, "prompts": int(sel.sum())})
        first = next(iter(diffs.values()))
        matched = bootstrap_interval(_near_minus_far, [first, self.distance, self.norm], seed=seed)
        return DistanceProfile(tuple(rows), examples, matched)


def _near_minus_far(w: np.ndarray, d: np.ndarray, distance: np.ndarray, norm: np.ndarray, strata: int = 4) -> np.ndarray:
    """Mean of ``d`` over the nearer half minus the farther half (split at each stratum's median
    distance), averaged over quartiles of ``||w||``, under each row of bootstrap weights ``w``
    (the strata and halves are those of the sample)."""
    edges = np.quantile(norm, np.linspace(0, 1, strata + 1))
    which = np.clip(np.searchsorted(edges, norm, side="right") - 1, 0, strata - 1)
    out = []
    for s in range(strata):
        sel = which == s
        if sel.sum() < 4:
            continue
        near = sel & (distance <= np.median(distance[sel]))
        far = sel & ~near
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(weighted_mean(w[:, near], d[near]) - weighted_mean(w[:, far], d[far]))
    return np.mean(out, axis=0) if out else np.full(len(w), np.nan)


def measure_losses(models: Mapping[str, RegressionGPT2], prompts: RegressionPrompts, task: RegressionTask, *,
                   alphas: Sequence[float] = (1.0,), predictors: Sequence[Predictor] = ("zero", "ridge", "discrete", "mixture"),
                   prior: str = "continuous") -> PromptLosses:
    """Squared errors of every model at every label scale in ``alphas`` (the conjugate; 1 = none)
    and of the reference ``predictors`` (named as in `REFERENCE_NAMES`), on ``prompts``."""
    alphas = check_finite("alphas", alphas)
    if any(a == 0 for a in alphas):
        raise InputError("alphas must be non-zero: the conjugate divides the prediction by alpha")
    errors: dict[str, np.ndarray] = {}
    for name, net in models.items():
        for a in alphas:
            errors[condition_name(name, a)] = ((predict(net, prompts, alpha=a) - prompts.ys) ** 2).double().numpy()
    for p in predictors:
        errors[REFERENCE_NAMES[p]] = ((bayes_predictions(prompts, task, p) - prompts.ys) ** 2).double().numpy()
    return PromptLosses(prior, errors, distance_to_discrete(prompts.ws, task).double().numpy(),
                        prompts.ws.norm(dim=1).double().numpy())


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(list(rows))


@dataclass(frozen=True)
class LossCurves:
    """Loss against the number of in-context examples, one curve per condition (rows: ``prior``,
    ``condition``, ``examples``, ``mse``, ``lo``, ``hi``)."""

    rows: tuple[dict, ...] = field(repr=False)
    n_prompts: int = 0

    def to_pandas(self):
        return _frame(self.rows)

    def plot(self):
        from ..core.plots import interval_lines

        return interval_lines(self.to_pandas(), x="examples", y="mse", lo="lo", hi="hi", line="condition", facet="prior",
                              title=f"Loss against in-context examples ({self.n_prompts} prompts per prior; 95% t intervals)",
                              x_title="in-context examples", y_title="mean squared error")

    def __repr__(self) -> str:
        f = self.to_pandas()
        mean = f.groupby(["prior", "condition"], sort=False)["mse"].mean()
        body = "; ".join(f"{p}/{c}: {v:.3f}" for (p, c), v in mean.items())
        return f"LossCurves({self.n_prompts} prompts, mean over positions: {body})"


@dataclass(frozen=True)
class DistanceProfile:
    """Per-prompt loss increases against the distance of ``w`` to the discrete set.

    Attributes:
        rows: ``bin``, ``distance`` (mean in the bin), ``norm`` (mean ``||w||``), ``quantity``,
            ``mean``, ``lo``, ``hi`` (t interval), ``prompts``.
        examples: the window of example counts each prompt's loss is averaged over.
        near_minus_far: ``(estimate, lo, hi)`` of the first quantity's near-half minus far-half
            mean, within quartiles of ``||w||`` (bootstrap interval).
    """

    rows: tuple[dict, ...] = field(repr=False)
    examples: tuple[int, int] = (1, 40)
    near_minus_far: tuple[float, float, float] = (float("nan"),) * 3

    def to_pandas(self):
        return _frame(self.rows)

    def plot(self):
        from ..core.plots import interval_lines

        lo, hi = self.examples
        return interval_lines(self.to_pandas(), x="distance", y="mean", lo="lo", hi="hi", line="quantity",
                              title=f"Loss increase over the pretrained model, {lo}-{hi} examples, by distance of w "
                                    f"to the discrete set (quantile bins; 95% t intervals)",
                              x_title="distance to the nearest discrete vector (bin mean)",
                              y_title="increase in mean squared error")

    def __repr__(self) -> str:
        f = self.to_pandas()
        first = f[f["quantity"] == f["quantity"].iloc[0]]
        body = ", ".join(f"d={r.distance:.2f}: {r.mean:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]" for r in first.itertuples())
        m, lo, hi = self.near_minus_far
        return (f"DistanceProfile({first['quantity'].iloc[0]}, examples {self.examples}: {body}; near - far at matched "
                f"||w||: {m:+.3f} [{lo:+.3f}, {hi:+.3f}])")


@dataclass(frozen=True)
class ConjugateSweep:
    """Loss against the label scale ``alpha`` of the conjugate.

    Attributes:
        rows: ``model``, ``alpha``, ``mse``, ``lo``, ``hi`` on test prompts, averaged over
            ``examples``.
        before, after: the two models compared (e.g. pretrained and fine-tuned).
        chosen: the ``alpha`` with the lowest validation loss of ``after``.
        recovery: ``(estimate, lo, hi)``: the fraction of the loss increase from ``before`` to
            ``after`` that the chosen ``alpha`` removes on test prompts,
            ``(L_after - L_after,alpha) / (L_after - L_before)`` (bootstrap interval; undefined
            when there is no increase).
    """

    rows: tuple[dict, ...] = field(repr=False)
    examples: tuple[int, int]
    before: str
    after: str
    chosen: float
    recovery: tuple[float, float, float]

    def to_pandas(self):
        return _frame(self.rows)

    def plot(self):
        from ..core.plots import interval_lines

        lo, hi = self.examples
        return interval_lines(self.to_pandas(), x="alpha", y="mse", lo="lo", hi="hi", line="model", log_x=True,
                              title=f"Conjugate prompting: labels x alpha, prediction / alpha ({lo}-{hi} examples, "
                                    f"continuous-prior test prompts; 95% t intervals); {self.after}'s alpha chosen on "
                                    f"validation: {self.chosen:g}",
                              x_title="alpha", y_title="mean squared error")

    def __repr__(self) -> str:
        f = self.to_pandas()
        body = "; ".join(f"{m}: " + ", ".join(f"x{r.alpha:g} {r.mse:.3f}" for r in sub.itertuples())
                         for m, sub in f.groupby("model", sort=False))
        r, lo, hi = self.recovery
        return (f"ConjugateSweep(examples {self.examples}: {body}; chosen alpha {self.chosen:g} recovers "
                f"{r:.0%} [{lo:.0%}, {hi:.0%}] of the increase from {self.before} to {self.after})")


def conjugate_sweep(validation: PromptLosses, test: PromptLosses, alphas: Sequence[float], *, before: str = "pretrained",
                    after: str = "fine-tuned", examples: tuple[int, int] = (1, 40), seed: int = 0) -> ConjugateSweep:
    """Loss of ``before`` and ``after`` against ``alpha`` (test prompts), the ``alpha`` that minimises
    ``after``'s loss on validation prompts, and the share of the increase from ``before`` to
    ``after`` that it removes on test prompts."""
    if not alphas or 1.0 not in alphas:
        raise InputError(f"alphas must include 1 (no conjugate), got {list(alphas)}")
    val = {a: validation.window(condition_name(after, a), examples).mean() for a in alphas}
    chosen = min(val, key=val.get)
    rows = []
    for m in (before, after):
        for a in alphas:
            mse, lo, hi = mean_interval(test.window(condition_name(m, a), examples))
            rows.append({"model": m, "alpha": a, "mse": mse, "lo": lo, "hi": hi})
    ft, pre = test.window(after, examples), test.window(before, examples)
    conj = test.window(condition_name(after, chosen), examples)
    recovery = bootstrap_interval(ratio_of_gains, [ft, conj, pre], seed=seed)
    return ConjugateSweep(tuple(rows), examples, before, after, float(chosen), recovery)


# --------------------------------------------------------------------------------------------
# Implied prior weight
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImpliedPrior:
    """For each model, the discrete-prior weight ``p`` whose Bayes mixture predicts most like it.

    Attributes:
        rows: ``model``, ``p``, ``gap`` (mean squared difference between the model's and the
            mixture's predictions), one row per ``p`` of the grid.
        best: model -> ``(p, lo, hi)``, the best ``p`` with a bootstrap interval over prompts.
        p_train: the mixture weight the model was pretrained with.
    """

    rows: tuple[dict, ...] = field(repr=False)
    best: dict[str, tuple[float, float, float]]
    p_train: float

    def to_pandas(self):
        return _frame(self.rows)

    def plot(self):
        from ..core.plots import profile_lines

        return profile_lines(self.to_pandas(), x="p", y="gap", line="model",
                             x_title="discrete-prior weight p of the Bayes mixture",
                             y_title="mean squared difference of predictions",
                             title=f"Which prior does each model behave as if it had? (pretraining used p = {self.p_train:g})")

    def __repr__(self) -> str:
        body = ", ".join(f"{m}: p={p:.3g} [{lo:.3g}, {hi:.3g}]" for m, (p, lo, hi) in self.best.items())
        return f"ImpliedPrior(pretraining p={self.p_train:g}; {body})"


def implied_prior(models: Mapping[str, RegressionGPT2], prompts: RegressionPrompts, task: RegressionTask, *,
                  grid: Sequence[float] | None = None, examples: tuple[int, int] = (1, 40), seed: int = 0) -> ImpliedPrior:
    """Fit each model's predictions with the Bayes mixture over a grid of discrete-prior weights
    (on ``prompts``, positions ``examples``); the grid point with the smallest mean squared
    difference is the model's implied prior weight."""
    grid = list(grid) if grid is not None else [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98,
                                                 0.99, 0.995, 0.999, 1.0]
    lo, hi = examples
    mixes = [bayes_predictions(prompts, task, "mixture", p_discrete=p)[:, lo:hi + 1].double() for p in grid]
    rows, best = [], {}
    for name, net in models.items():
        pred = predict(net, prompts)[:, lo:hi + 1].double()
        per_prompt = np.stack([((pred - m) ** 2).mean(dim=1).numpy() for m in mixes], axis=1)  # (P, grid)
        for p, g in zip(grid, per_prompt.mean(axis=0)):
            rows.append({"model": name, "p": p, "gap": float(g)})
        best[name] = bootstrap_interval(lambda w, a: np.asarray(grid)[np.argmin(weighted_mean(w, a), axis=1)], [per_prompt],
                                        seed=seed)
    return ImpliedPrior(tuple(rows), best, task.p_discrete)
