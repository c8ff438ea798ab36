"""``method="naive"``: one forward pass per (trial, layer, head) at batch size 1, through the
model's backend. Slow and simple: the oracle every faster method is tested against."""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.io import progress_bar
from ..models.hooks import patch_head_outputs
from ..models.model import IVModel
from .metrics import AnswerMetric, MetricInputs


def run_metric(model: IVModel, items: Sequence[MetricInputs], metric: AnswerMetric) -> Float[Tensor, " rows"]:
    """The metric of each item in one left-padded forward pass (with whatever is attached)."""
    batch = model.make_batch([it.ids for it in items])
    logits = model.forward(batch, logits_to_keep=metric.positions(items))
    return metric(logits, items)


def patch_positions(items: Sequence[MetricInputs]) -> torch.Tensor:
    """Each item's last prompt token in a left-padded batch of ``items``."""
    width = max(len(it.ids) for it in items)
    return torch.tensor([width - len(it.ids) + it.position for it in items], dtype=torch.long)


@torch.inference_mode()
def naive_effects(model: IVModel, items: Sequence[MetricInputs], mean_acts: Float[Tensor, "layers heads d_head"],
                  metric: AnswerMetric, progress: bool
                  ) -> tuple[Float[Tensor, "trials layers heads"], Float[Tensor, " trials"]]:
    """Per-head effects ``(n, n_layers, n_heads)`` and the unpatched metric ``(n,)``."""
    g = model.geometry
    effects = torch.zeros(len(items), g.n_layers, g.n_heads)
    baseline = torch.zeros(len(items))
    bar = progress_bar(total=len(items) * g.n_total_heads, desc="indirect effects (naive)", progress=progress)
    for i, it in enumerate(items):
        base = run_metric(model, [it], metric)[0]
        baseline[i] = base
        pos = patch_positions([it])
        for layer in range(g.n_layers):
            for head in range(g.n_heads):
                mask = torch.zeros(g.n_heads, dtype=torch.bool)
                mask[head] = True
                with patch_head_outputs(model, {layer: (mask, mean_acts[layer])}, positions=pos):
                    effects[i, layer, head] = run_metric(model, [it], metric)[0] - base
                bar.update(1)
    bar.close()
    return effects, baseline
