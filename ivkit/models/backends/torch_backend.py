"""``backend="torch"``: plain PyTorch forward hooks on the Hugging Face modules.

Hooks used (``l`` is the layer; paths are the model's `ArchSpec`, shown for
Llama):

* ``heads``: hook: forward *pre*-hook on ``model.layers[l].self_attn.o_proj``; tensor: input ``(B,
  T, n_heads*d_head)``
* ``block``: hook: forward hook on ``model.layers[l]``; tensor: output ``(B, T, d_model)`` (a tensor
  under transformers 5, a tuple before; both handled)

This is the reference backend: the fastest, the only one the exact continuation engine
(``method="fast"``) runs on, and the one the others are tested against.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.errors import BackendError
from .base import Backend, Batch, HookedModel, Intervention, register_backend


def block_output_tensor(output):
    """The hidden states in a decoder block's output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def replace_block_output(output, hidden: torch.Tensor):
    """``output`` with its hidden states replaced, keeping its type (tensor or tuple)."""
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    return hidden


def attach_hf_hooks(model: HookedModel, intervention: Intervention) -> Callable[[], None]:
    """Register ``intervention`` as forward hooks on the HF modules of ``model``; return the
    function that removes them. Used by the torch backend and by `ivkit.fast`."""
    handles = []

    def heads_hook(layer: int):
        def hook(module, args):
            new = intervention.edit(layer, args[0])
            return None if new is None else (new,) + tuple(args[1:])
        return hook

    def block_hook(layer: int):
        def hook(module, args, output):
            new = intervention.edit(layer, block_output_tensor(output))
            return None if new is None else replace_block_output(output, new)
        return hook

    try:
        for layer in intervention.layers:
            if intervention.site == "heads":
                handles.append(model.attn_out_proj(layer).register_forward_pre_hook(heads_hook(layer)))
            elif intervention.site == "block":
                handles.append(model.block(layer).register_forward_hook(block_hook(layer)))
            else:
                raise ValueError(f"unknown intervention site {intervention.site!r}")
    except BaseException:
        for h in handles:
            h.remove()
        raise

    def detach() -> None:
        for h in handles:
            h.remove()
    return detach


@register_backend
class TorchBackend(Backend):
    """Forward hooks on the Hugging Face modules (see the module docstring)."""

    name = "torch"
    aliases = ("hf",)
    supports_grad = True
    supports_fast = True

    @classmethod
    def create(cls, hf_model: Any, tokenizer: Any, *, name: str, wrapper: Any = None,
               remote: bool | str = False) -> "TorchBackend":
        if remote is not False:
            raise BackendError(f"remote execution (remote={remote!r}) goes through NDIF and needs backend='nnsight', "
                               f"not 'torch'")
        return cls()

    def attach(self, model: HookedModel, intervention: Intervention) -> Callable[[], None]:
        return attach_hf_hooks(model, intervention)

    def forward(self, model: HookedModel, batch: Batch, *, logits_to_keep: int = 1) -> torch.Tensor:
        out = model.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
        return out.logits.float()
