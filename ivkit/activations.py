"""Floor 3: what a model computes on prompts: per-head outputs, their means, and the residual
stream's alignment with a vector.

* `head_activations`: hook point: input of each layer's attention output projection, last token;
  returns: ``(n_prompts, n_layers, n_heads, d_head)``
* `mean_head_activations`: hook point: the same, averaged over prompts; returns: ``(n_layers,
  n_heads, d_head)``
* `residual_stream`: hook point: output of each decoder block, last token; returns: ``(n_prompts,
  n_layers, d_model)``
* `residual_alignment`: hook point: output of each decoder block, last token; returns: one mean
  cosine per layer

The alignment can be *centred*: the cosine is taken between ``h - center`` and the vector, where
``center`` is a per-layer mean residual (``residual_stream(...).mean(0)`` over a reference set of
prompts). Residual streams share a large common direction, so raw cosines with any fixed vector
sit at one level for every prompt; centring removes that part and leaves how prompts differ.
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
    """Mean of `head_activations` over prompts: ``(n_layers, n_heads, d_head)``.

    Batched with left padding; equal to batch size 1 within float32 rounding.
    """
    if len(prompts) == 0:
        raise InputError("mean_head_activations needs at least one prompt")
    return head_activations(model, prompts, batch_size=batch_size, progress=progress).mean(0)


@torch.inference_mode()
def residual_stream(model: IVModel, prompts: EncodedPrompts, *, batch_size: int = 16,
                    progress: bool = False) -> Float[Tensor, "prompts layers d_model"]:
    """Every block's output at each prompt's last token: ``(n_prompts, n_layers, d_model)``,
    float32, in prompt order."""
    g = model.geometry
    out = torch.empty(len(prompts), g.n_layers, g.d_model)
    for idx in progress_bar(length_batches([len(x) for x in prompts.input_ids], batch_size), desc="residual",
                            progress=progress):
        with record_residual(model) as res:
            model.forward(model.make_batch([prompts.input_ids[i] for i in idx]))
        out[idx] = torch.stack([res[l].float().cpu() for l in range(g.n_layers)], dim=1)
    return out


def residual_alignment(model: IVModel, prompts: EncodedPrompts, vector: Float[Tensor, " d_model"], *,
                       batch_size: int = 16, center: Float[Tensor, "layers d_model"] | None = None) -> list[float]:
    """Per layer, the mean cosine between the last-token block output (the residual stream after
    each block) and ``vector``: does the model move towards an IV when it sees the prompts?

    With ``center`` (``(n_layers, d_model)``), the cosine is between ``h - center[layer]`` and
    ``vector`` (see the module docstring)."""
    g = model.geometry
    if center is not None and tuple(center.shape) != (g.n_layers, g.d_model):
        raise InputError(f"center has shape {tuple(center.shape)}; {model.name} needs ({g.n_layers}, {g.d_model})")
    sums = torch.zeros(g.n_layers, dtype=torch.float64)
    v = vector.double()
    c = None if center is None else center.double().cpu()
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in prompts.input_ids], batch_size):
            with record_residual(model) as res:
                model.forward(model.make_batch([prompts.input_ids[i] for i in idx]))
            for l in range(g.n_layers):
                h = res[l].double().cpu() - (0 if c is None else c[l])
                sums[l] += torch.nn.functional.cosine_similarity(h, v[None], dim=-1).sum()
    return (sums / len(prompts)).tolist()
