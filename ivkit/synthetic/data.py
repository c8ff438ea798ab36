"""In-context linear regression with two priors over the weights (the set-up of Kotha et al.).

A *prompt* is ``n_points`` pairs ``(x_i, y_i)`` with ``x_i ~ N(0, I_d)`` and
``y_i = w . x_i + eps_i``, ``eps_i ~ N(0, noise^2)``. A model reading the prompt predicts each
``y_i`` from the pairs before it, so one prompt of ``n_points`` pairs holds the predictions for
0, 1, ..., ``n_points - 1`` in-context examples (41 pairs: 0 to 40 examples).

The weights ``w`` come from one of two priors:

* **discrete**: ``w`` is one of ``n_discrete`` (64) fixed vectors, drawn once from
  ``N(0, tau^2 I_d)`` with ``discrete_seed`` and then kept (`discrete_set`); each is equally
  likely;
* **continuous**: ``w ~ N(0, tau^2 I_d)``.

Pretraining draws each prompt's prior from the *mixture*: discrete with probability
``p_discrete``, else continuous. Fine-tuning uses the discrete prior only.

Everything is seeded: `sample_prompts` with the same `RegressionTask`, prior, size
and seed returns the same tensors, on any machine (the draws use a CPU ``torch.Generator``).

Gotchas
-------
* The discrete set depends on ``discrete_seed`` and ``tau`` and ``dim``; two tasks that differ in
  any of them have different discrete sets, so a model trained on one is not "fine-tuned on the
  discrete prior" of the other.
* ``noise`` is the standard deviation sigma, not the variance.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..core.errors import InputError
from ..core.options import check_at_least, check_choice, check_finite, shown

#: The prior a prompt's weights are drawn from.
Prior = Literal["discrete", "continuous", "mixture"]


@dataclass(frozen=True)
class RegressionTask:
    """The data distribution: dimension, prompt length, noise and the two priors.

    Attributes:
        dim: dimension ``d`` of ``x`` and ``w``.
        n_points: pairs per prompt; predictions exist for 0 .. ``n_points - 1`` examples.
        noise: standard deviation sigma of the label noise.
        tau: standard deviation of each coordinate of ``w`` under both priors (the discrete
            vectors are drawn from the continuous prior once).
        n_discrete: size of the discrete set.
        discrete_seed: the seed the discrete set is drawn with.
        p_discrete: probability of the discrete prior in the pretraining mixture.
    """

    dim: int = 4
    n_points: int = 41
    noise: float = 1.0
    tau: float = 1.0
    n_discrete: int = 64
    discrete_seed: int = 0
    p_discrete: float = 0.5

    def __post_init__(self) -> None:
        check_at_least("dim", self.dim, 1)
        check_at_least("n_points", self.n_points, 1)
        check_at_least("n_discrete", self.n_discrete, 1)
        check_at_least("discrete_seed", self.discrete_seed, 0)
        for name in ("noise", "tau"):
            (value,) = check_finite(name, (getattr(self, name),))
            if value <= 0:
                raise InputError(f"{shown(name)} is a standard deviation: it must be positive, got {value}")
        (p,) = check_finite("p_discrete", (self.p_discrete,))
        if not 0.0 <= p <= 1.0:
            raise InputError(f"{shown('p_discrete')} is a probability: it must be in [0, 1], got {p}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegressionTask":
        return cls(**d)

    def with_points(self, n_points: int) -> "RegressionTask":
        """The same task with ``n_points`` pairs per prompt (the discrete set is unchanged)."""
        return replace(self, n_points=n_points)


@dataclass(frozen=True, eq=False)
class RegressionPrompts:
    """A batch of prompts.

    Attributes:
        xs: ``(batch, n_points, dim)`` inputs.
        ys: ``(batch, n_points)`` labels (with noise).
        ws: ``(batch, dim)`` the true weights of each prompt.
        from_discrete: ``(batch,)`` True where ``w`` came from the discrete prior.
        index: ``(batch,)`` the index of ``w`` in the discrete set, -1 for continuous draws.
    """

    xs: Float[Tensor, "batch points dim"]
    ys: Float[Tensor, "batch points"]
    ws: Float[Tensor, "batch dim"]
    from_discrete: Bool[Tensor, " batch"]
    index: Int[Tensor, " batch"]

    def __len__(self) -> int:
        return int(self.xs.shape[0])

    def __repr__(self) -> str:
        b, n, d = self.xs.shape
        return f"RegressionPrompts({b} prompts x {n} points, dim {d}, {int(self.from_discrete.sum())} discrete)"

    def scaled(self, alpha: float) -> "RegressionPrompts":
        """The conjugate prompts: every label (and so ``w``) multiplied by ``alpha``. A prediction
        on them divided by ``alpha`` is a prediction for the original prompts."""
        (alpha,) = check_finite("alpha", (alpha,))
        if alpha == 0:
            raise InputError("alpha must be non-zero: the conjugate divides the prediction by alpha")
        return RegressionPrompts(self.xs, self.ys * alpha, self.ws * alpha, self.from_discrete, self.index)

    def first(self, k: int) -> "RegressionPrompts":
        """The first ``k`` prompts."""
        check_at_least("k", k, 1)
        return RegressionPrompts(self.xs[:k], self.ys[:k], self.ws[:k], self.from_discrete[:k], self.index[:k])

    def head(self, n_points: int) -> "RegressionPrompts":
        """The first ``n_points`` pairs of every prompt."""
        check_at_least("n_points", n_points, 1)
        if n_points > self.xs.shape[1]:
            raise InputError(f"n_points={n_points} is more than the prompts' {self.xs.shape[1]} pairs")
        return RegressionPrompts(self.xs[:, :n_points], self.ys[:, :n_points], self.ws, self.from_discrete, self.index)


def seeded_generator(*keys: Any) -> torch.Generator:
    """A CPU generator seeded from ``keys`` (ints and strings), the same on every run and machine."""
    digest = hashlib.sha256(repr(tuple(keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def discrete_set(task: RegressionTask) -> Float[Tensor, "n_discrete dim"]:
    """The fixed discrete set of weight vectors, ``(n_discrete, dim)``, drawn from
    ``N(0, tau^2 I)`` with ``task.discrete_seed``."""
    gen = seeded_generator("discrete-set", task.discrete_seed)
    return task.tau * torch.randn(task.n_discrete, task.dim, generator=gen)


def distance_to_discrete(ws: Float[Tensor, "batch dim"], task: RegressionTask) -> Float[Tensor, " batch"]:
    """Euclidean distance from each ``w`` to the nearest vector of the discrete set."""
    if ws.ndim != 2 or ws.shape[1] != task.dim:
        raise InputError(f"ws must be (batch, {task.dim}), got shape {tuple(ws.shape)}")
    return torch.cdist(ws.float(), discrete_set(task), compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values


def sample_prompts(task: RegressionTask, n_prompts: int, prior: Prior, seed: int | torch.Generator,
                   *, discrete: Tensor | None = None, active_dims: int | None = None) -> RegressionPrompts:
    """Draw ``n_prompts`` prompts of ``task.n_points`` pairs with weights from ``prior``.

    Args:
        prior: ``"discrete"``, ``"continuous"`` or ``"mixture"`` (discrete with probability
            ``task.p_discrete``).
        seed: an int (the same int gives the same prompts) or a ``torch.Generator``.
        discrete: the discrete set, if already computed (`discrete_set`).
        active_dims: keep only the first ``active_dims`` coordinates of ``x`` and ``w`` (the rest
            are zero; the labels follow), as a training curriculum does. The random draws are the
            same as without it.
    """
    check_choice("prior", prior, Prior)
    check_at_least("n_prompts", n_prompts, 1)
    gen = seed if isinstance(seed, torch.Generator) else seeded_generator("prompts", int(seed))
    d, n = task.dim, task.n_points
    table = discrete_set(task) if discrete is None else discrete
    if prior == "mixture":
        from_discrete = torch.rand(n_prompts, generator=gen) < task.p_discrete
    else:
        from_discrete = torch.full((n_prompts,), prior == "discrete")
    index = torch.randint(table.shape[0], (n_prompts,), generator=gen)
    gauss = task.tau * torch.randn(n_prompts, d, generator=gen)
    ws = torch.where(from_discrete[:, None], table[index], gauss)
    xs = torch.randn(n_prompts, n, d, generator=gen)
    eps = task.noise * torch.randn(n_prompts, n, generator=gen)
    if active_dims is not None and check_at_least("active_dims", active_dims, 1) < d:
        xs[:, :, active_dims:] = 0.0
        ws = ws.clone()
        ws[:, active_dims:] = 0.0
    ys = torch.einsum("bnd,bd->bn", xs, ws) + eps
    return RegressionPrompts(xs, ys, ws, from_discrete, torch.where(from_discrete, index, -1))
