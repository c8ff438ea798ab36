"""Bayes-optimal predictors for in-context linear regression under each prior.

Every function here predicts, for every position ``i`` of a prompt, ``y_i`` from the first ``i``
pairs (``(x_0, y_0) .. (x_{i-1}, y_{i-1})``) and the query ``x_i``, exactly as the transformer of
`ivkit.synthetic.model` does: inputs ``xs (batch, n, d)``, ``ys (batch, n)``, output
``(batch, n)``. The mean squared error of the posterior mean is the least any predictor can have
on prompts drawn from that prior.

* **continuous prior** ``w ~ N(0, tau^2 I)``: the posterior mean is ridge regression,
  ``w_hat = (X^T X + (sigma^2 / tau^2) I)^-1 X^T y`` (`ridge_predictions`);
* **discrete prior** (uniform over a set ``W`` of vectors): the posterior over ``W`` is
  ``p(w_k | D) ~ exp(-||y - X w_k||^2 / (2 sigma^2))`` and the prediction is
  ``sum_k p(w_k | D) w_k . x`` (`discrete_predictions`);
* **mixture** (discrete with probability ``p``): the posterior probability of the discrete prior
  compares the two marginal likelihoods (`discrete_posterior`), and the prediction mixes the
  two predictions with it (`mixture_predictions`).

Ridge is linear in ``y``: scaling every label by ``alpha`` scales its prediction by ``alpha``, so
the conjugate (scale the labels, divide the prediction by ``alpha``) leaves it unchanged. The
discrete and mixture predictors are not linear in ``y``.

Computation is in float64 with prefix sums of ``x x^T`` and ``x y``, so all positions cost one
batched ``d x d`` solve each.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError
from ..core.options import check_choice
from .data import RegressionPrompts, RegressionTask, discrete_set

#: The reference predictors: the zero predictor (the prior mean) and the three posterior means.
Predictor = Literal["zero", "ridge", "discrete", "mixture"]


def _check(xs: Tensor, ys: Tensor) -> None:
    if xs.ndim != 3 or ys.shape != xs.shape[:2]:
        raise InputError(f"xs must be (batch, n, d) and ys (batch, n); got {tuple(xs.shape)} and {tuple(ys.shape)}")


def _prefix(t: Tensor) -> Tensor:
    """Exclusive prefix sums along dim 1: entry ``i`` sums entries ``0 .. i-1``."""
    c = t.cumsum(dim=1)
    return torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)


def _gram(xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Prefix ``X^T X (b, n, d, d)``, ``X^T y (b, n, d)`` and ``y^T y (b, n)`` in float64."""
    x, y = xs.double(), ys.double()
    return _prefix(x[..., :, None] * x[..., None, :]), _prefix(x * y[..., None]), _prefix(y * y)


def ridge_predictions(xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"], *, noise: float,
                      tau: float) -> Float[Tensor, "batch n"]:
    """Ridge (the continuous prior's posterior mean) at every position, ``lambda = noise^2 / tau^2``."""
    _check(xs, ys)
    xtx, xty, _ = _gram(xs, ys)
    eye = torch.eye(xs.shape[-1], dtype=torch.float64)
    w = torch.linalg.solve(xtx + (noise / tau) ** 2 * eye, xty)
    return (w * xs.double()).sum(-1).to(xs.dtype)


def _discrete_scores(xs: Tensor, ys: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
    """Prefix sums of squared residuals under each vector ``(b, n, K)`` and the predictions of each
    vector at each query ``(b, n, K)``."""
    preds = torch.einsum("bnd,kd->bnk", xs.double(), table.double())
    return _prefix((ys.double()[..., None] - preds) ** 2), preds


def discrete_predictions(xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"],
                         table: Float[Tensor, "k d"], *, noise: float) -> Float[Tensor, "batch n"]:
    """The discrete prior's posterior mean: vectors of ``table`` weighted by their posterior."""
    _check(xs, ys)
    sq, preds = _discrete_scores(xs, ys, table)
    post = torch.softmax(-sq / (2 * noise**2), dim=-1)
    return (post * preds).sum(-1).to(xs.dtype)


def log_evidence(xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"], table: Float[Tensor, "k d"], *,
                 noise: float, tau: float) -> tuple[Float[Tensor, "batch n"], Float[Tensor, "batch n"]]:
    """Log marginal likelihoods of the first ``i`` labels at every position ``i``, under the discrete
    and under the continuous prior: ``(log p(y | X, discrete), log p(y | X, continuous))``, each
    ``(batch, n)`` float64 (0 at position 0, where there are no labels)."""
    _check(xs, ys)
    b, n, d = xs.shape
    count = torch.arange(n, dtype=torch.float64)
    sq, _ = _discrete_scores(xs, ys, table)
    log_d = (torch.logsumexp(-sq / (2 * noise**2), dim=-1) - math.log(table.shape[0])
             - 0.5 * count * math.log(2 * math.pi * noise**2))
    xtx, xty, yty = _gram(xs, ys)
    lam = (noise / tau) ** 2
    eye = torch.eye(d, dtype=torch.float64)
    _, logdet = torch.linalg.slogdet(eye + xtx / lam)
    quad = (yty - (xty * torch.linalg.solve(xtx + lam * eye, xty)).sum(-1)) / noise**2
    log_c = -0.5 * (count * math.log(2 * math.pi * noise**2) + logdet + quad)
    return log_d, log_c


def discrete_posterior(xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"], table: Float[Tensor, "k d"], *,
                       noise: float, tau: float, p_discrete: float) -> Float[Tensor, "batch n"]:
    """``P(discrete prior | first i pairs)`` at every position ``i``, with prior probability
    ``p_discrete`` (``p_discrete`` at position 0)."""
    if not 0.0 <= p_discrete <= 1.0:
        raise InputError(f"p_discrete must be in [0, 1], got {p_discrete}")
    if p_discrete in (0.0, 1.0):
        return torch.full(ys.shape, p_discrete, dtype=torch.float64)
    log_d, log_c = log_evidence(xs, ys, table, noise=noise, tau=tau)
    return torch.sigmoid(log_d - log_c + math.log(p_discrete) - math.log1p(-p_discrete))


def mixture_predictions(xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"], table: Float[Tensor, "k d"], *,
                        noise: float, tau: float, p_discrete: float) -> Float[Tensor, "batch n"]:
    """The mixture prior's posterior mean: the discrete and the ridge predictions weighted by the
    posterior probability of each prior (`discrete_posterior`)."""
    post = discrete_posterior(xs, ys, table, noise=noise, tau=tau, p_discrete=p_discrete)
    dis = discrete_predictions(xs, ys, table, noise=noise).double()
    rid = ridge_predictions(xs, ys, noise=noise, tau=tau).double()
    return (post * dis + (1 - post) * rid).to(xs.dtype)


def bayes_predictions(prompts: RegressionPrompts, task: RegressionTask, predictor: Predictor, *,
                      p_discrete: float | None = None) -> Float[Tensor, "batch n"]:
    """The predictions of one reference ``predictor`` on ``prompts`` (``(batch, n)``).

    ``p_discrete`` overrides ``task.p_discrete`` for the mixture (e.g. to ask which prior weight a
    fine-tuned model behaves as if it had)."""
    check_choice("predictor", predictor, Predictor)
    xs, ys = prompts.xs, prompts.ys
    if predictor == "zero":
        return torch.zeros_like(ys)
    if predictor == "ridge":
        return ridge_predictions(xs, ys, noise=task.noise, tau=task.tau)
    table = discrete_set(task)
    if predictor == "discrete":
        return discrete_predictions(xs, ys, table, noise=task.noise)
    p = task.p_discrete if p_discrete is None else p_discrete
    return mixture_predictions(xs, ys, table, noise=task.noise, tau=task.tau, p_discrete=p)


class BayesMixture(torch.nn.Module):
    """The Bayes mixture predictor as a module with a model's call, ``(xs, ys) -> (batch, n)``, so
    that it can be measured like a trained network (e.g. with the conjugate). ``p_discrete`` is
    the prior weight of the discrete prior it assumes (``task.p_discrete`` by default); it has no
    parameters."""

    def __init__(self, task: RegressionTask, p_discrete: float | None = None):
        super().__init__()
        self.task = task
        self.p_discrete = task.p_discrete if p_discrete is None else float(p_discrete)
        if not 0.0 <= self.p_discrete <= 1.0:
            raise InputError(f"p_discrete must be in [0, 1], got {self.p_discrete}")
        self.table = discrete_set(task)

    def forward(self, xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"]) -> Float[Tensor, "batch n"]:
        t = self.task
        return mixture_predictions(xs, ys, self.table, noise=t.noise, tau=t.tau, p_discrete=self.p_discrete)

    def extra_repr(self) -> str:
        return f"p_discrete={self.p_discrete:g}"
