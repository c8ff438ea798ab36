"""Floor 3: what a model computes on prompts: per-head outputs, their means, and the residual
stream's alignment with a vector.

=============================  =========================================  ==============================
function                       hook point                                 returns
=============================  =========================================  ==============================
:func:`head_activations`       input of each layer's attention output      ``(n_prompts, n_layers,
                               projection, last token                     n_heads, d_head)``
:func:`mean_head_activations`  the same, averaged over prompts            ``(n_layers, n_heads, d_head)``
:func:`residual_alignment`     output of each decoder block, last token   one mean cosine per layer
=============================  =========================================  ==============================
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .core.errors import InputError
from .core.io import progress_bar
from .core.prompts import EncodedPrompts
from .models.hooks import record_head_outputs, record_residual
from .models.model import IVModel, length_batches


@torch.inference_mode()
def head_activations(model: IVModel, prompts: EncodedPrompts, *, batch_size: int = 16,
                     progress: bool = True) -> Float[Tensor, "prompts layers heads d_head"]:
    """Every head's output at each prompt's last token.

    Returns:
        ``(n_prompts, n_layers, n_heads, d_head)``, float32, in prompt order.
    """
    g = model.geometry
    out = torch.empty(len(prompts), g.n_layers, g.n_heads, g.d_head)
    batches = length_batches([len(s) for s in prompts.input_ids], batch_size)
    for idx in progress_bar(batches, desc="head activations", progress=progress):
        batch = model.make_batch([prompts.input_ids[i] for i in idx])
        with record_head_outputs(model) as rec:
            model.forward(batch)
        out[idx] = rec.stack().float().cpu()
    return out


def mean_head_activations(model: IVModel, prompts: EncodedPrompts, *, batch_size: int = 16,
                          progress: bool = True) -> Float[Tensor, "layers heads d_head"]:
    """Mean of :func:`head_activations` over prompts: ``(n_layers, n_heads, d_head)``.

    Batched with left padding; equal to batch size 1 within float32 rounding.
    """
    if len(prompts) == 0:
        raise InputError("mean_head_activations needs at least one prompt")
    return head_activations(model, prompts, batch_size=batch_size, progress=progress).mean(0)


def residual_alignment(model: IVModel, prompts: EncodedPrompts, vector: Float[Tensor, " d_model"], *,
                       batch_size: int = 16) -> list[float]:
    """Per layer, the mean cosine between the last-token block output (the residual stream after
    each block) and ``vector``: does the model move towards an IV when it sees the prompts?"""
    g = model.geometry
    sums = torch.zeros(g.n_layers, dtype=torch.float64)
    v = vector.double()
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in prompts.input_ids], batch_size):
            with record_residual(model) as res:
                model.forward(model.make_batch([prompts.input_ids[i] for i in idx]))
            for l in range(g.n_layers):
                sums[l] += torch.nn.functional.cosine_similarity(res[l].double().cpu(), v[None], dim=-1).sum()
    return (sums / len(prompts)).tolist()
