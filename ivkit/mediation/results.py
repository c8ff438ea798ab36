"""The result of causal mediation: `IndirectEffects`, the average indirect effect (AIE) of
every head, with the per-trial effects behind it."""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import ArtifactError
from ..core.html import heat, table
from ..core.io import atomic_write_json
from ..core.plots import head_heatmap


@dataclass(frozen=True, eq=False)
class IndirectEffects:
    """Result of `indirect_effects`.

    Attributes:
        aie: ``(n_layers, n_heads)`` average indirect effect.
        per_trial: ``(n_trials, n_layers, n_heads)`` effect on each corrupted prompt.
        baseline: ``(n_trials,)`` the metric on each corrupted prompt, unpatched.
        method: how it was computed (``"naive"``, ...).
        metric: ``"prob"``, ``"logit"`` or ``"nll"``.
        seconds: wall time of the computation.
        info: free-form provenance (model, task, seed, ...).
    """

    aie: Float[Tensor, "layers heads"]
    per_trial: Float[Tensor, "trials layers heads"]
    baseline: Float[Tensor, " trials"]
    method: str
    metric: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def given(cls, aie: Float[Tensor, "layers heads"]) -> "IndirectEffects":
        """Wrap a bare AIE matrix (from elsewhere) as a result with one trial."""
        aie = torch.as_tensor(aie, dtype=torch.float32)
        return cls(aie, aie[None], torch.zeros(1), "given", "prob", 0.0)

    def with_info(self, **info: Any) -> "IndirectEffects":
        """A copy with ``info`` extended."""
        return dataclasses.replace(self, info={**self.info, **info})

    @property
    def n_layers(self) -> int:
        return int(self.aie.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.aie.shape[1])

    def top_heads(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest AIE, as ``(layer, head, aie)``, largest first.

        Ties are broken by (layer, head), so the order is deterministic.
        """
        flat = self.aie.flatten().tolist()
        order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))[:k]
        return [(i // self.n_heads, i % self.n_heads, flat[i]) for i in order]

    def to_pandas(self):
        """One row per head: ``layer, head, aie, std, rank`` (rank 1 = largest AIE)."""
        import pandas as pd

        std = self.per_trial.std(0) if self.per_trial.shape[0] > 1 else torch.zeros_like(self.aie)
        rows = [{"layer": layer, "head": h, "aie": float(self.aie[layer, h]), "std": float(std[layer, h])}
                for layer in range(self.n_layers) for h in range(self.n_heads)]
        df = pd.DataFrame(rows)
        df["rank"] = df["aie"].rank(ascending=False, method="first").astype(int)
        return df.sort_values("rank").reset_index(drop=True)

    def plot(self, top_k: int = 10, title: str | None = None, heads: list[tuple[int, int]] | None = None):
        """Plotly heatmap (layers x heads), the top ``k`` heads circled and ranked; ``heads``
        circles those instead, numbered in the order given (an IV's heads when they are not the
        top k, e.g. chosen greedily)."""
        metric = {"prob": "P(answer)", "logit": "answer logit", "nll": "-ΔNLL"}.get(self.metric, self.metric)
        marked = [(l, h) for l, h, _ in self.top_heads(top_k)] if heads is None else [(int(l), int(h)) for l, h in heads]
        return head_heatmap(
            self.aie.float().numpy(), marked=marked, marked_name=f"top {top_k}" if heads is None else "chosen heads",
            numbered_by="rank" if heads is None else "step",
            title=title or f"Average indirect effect per head ({metric}, {self.method}, {self.per_trial.shape[0]} trials)")

    def _repr_html_(self) -> str:
        top = [{"rank": i + 1, "layer": l, "head": h, "aie": a} for i, (l, h, a) in enumerate(self.top_heads(10))]
        return (f"<b>{html.escape(repr(self))}</b>" + heat(self.aie.numpy(), marked=[(l, h) for l, h, _ in self.top_heads(10)],
                                                           caption="AIE per head (layers down, heads across)")
                + table(top, caption="the top 10 heads", digits=5))

    def __repr__(self) -> str:
        top = ", ".join(f"{l}.{h}" for l, h, _ in self.top_heads(5))
        return (f"IndirectEffects({self.n_layers}x{self.n_heads} heads, {self.per_trial.shape[0]} trials, "
                f"metric={self.metric}, method={self.method}, top: {top})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "aie": self.aie.tolist(),
            "method": self.method,
            "metric": self.metric,
            "seconds": self.seconds,
            "n_trials": int(self.per_trial.shape[0]),
            "baseline": self.baseline.tolist(),
            "per_trial": self.per_trial.tolist(),
            "top_heads": [[l, h, a] for l, h, a in self.top_heads(10)],
            **({"info": self.info} if self.info else {}),
        }

    def save(self, path: str | Path) -> None:
        """Write the JSON form (``indirect_effects.json``) atomically."""
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IndirectEffects":
        try:
            aie = torch.tensor(d["aie"], dtype=torch.float32)
            per_trial = torch.tensor(d.get("per_trial") or [d["aie"]], dtype=torch.float32)
            return cls(aie, per_trial, torch.tensor(d.get("baseline", []), dtype=torch.float32),
                       d.get("method", "?"), d.get("metric", "prob"), float(d.get("seconds", 0.0)),
                       d.get("info", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"malformed indirect-effects data ({e}); re-run ivkit extract") from None

    @classmethod
    def load(cls, path: str | Path) -> "IndirectEffects":
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"no such file {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path} is not valid JSON ({e})") from None
