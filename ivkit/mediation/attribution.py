"""Attribution patching (``method="attribution"``): a first-order estimate of every head's effect.

For head ``(l, h)`` on a corrupted prompt with last-token output ``z`` and mean ``m``:

    effect(l, h) ≈ (m - z) · ∂metric/∂z

All heads at once cost one forward and one backward pass per prompt (about three forward
passes), batched over prompts. The estimate is exact when the metric is linear in the head
outputs, and drifts where attention saturates or direct and indirect paths cancel; compare it
with ``method="fast"`` (exact) on your task before trusting its ranking
(`ivkit.rank_agreement`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from ..core.io import progress_bar
from ..models.hooks import perturb_head_outputs
from ..models.model import IVModel, length_batches
from .metrics import AnswerMetric, MetricInputs
from .naive import patch_positions


@contextmanager
def _frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients (we only need gradients with respect to activations)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def attribution_effects(model: IVModel, items: Sequence[MetricInputs], mean_acts: Float[Tensor, "layers heads d_head"],
                        metric: AnswerMetric, progress: bool, *, batch_size: int = 8
                        ) -> tuple[Float[Tensor, "trials layers heads"], Float[Tensor, " trials"]]:
    """Per-head first-order effects ``(n, n_layers, n_heads)`` and the corrupted metric ``(n,)``."""
    g = model.geometry
    effects = torch.empty(len(items), g.n_layers, g.n_heads)
    baseline = torch.empty(len(items))
    means = mean_acts.to(model.device)
    batches = length_batches([len(it.ids) for it in items], batch_size)
    with _frozen_parameters(model.model), torch.inference_mode(False), torch.enable_grad():
        for idx in progress_bar(batches, desc="indirect effects (attribution)", progress=progress):
            chunk = [items[i] for i in idx]
            batch = model.make_batch([it.ids for it in chunk])
            pos = patch_positions(chunk).to(model.device)
            # A zero added at each head output: its gradient is the total derivative of the metric
            # with respect to that output, through every later layer (later heads included).
            with perturb_head_outputs(model, positions=pos) as perturbation:
                logits = model.forward(batch, logits_to_keep=metric.positions(chunk))
            zeros, values = perturbation.zeros, perturbation.values
            vals = metric(logits, chunk)
            grads = torch.autograd.grad(vals.sum(), [zeros[l] for l in range(g.n_layers)])
            for l, grad in enumerate(grads):
                delta = means[l][None] - rearrange(values[l], "b (h d) -> b h d", h=g.n_heads)
                effects[idx, l] = (delta * rearrange(grad, "b (h d) -> b h d", h=g.n_heads)).sum(-1).float().cpu()
            baseline[idx] = vals.detach().float().cpu()
    return effects, baseline
