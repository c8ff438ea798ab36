"""``backend="transformer-lens"``: hook points of a TransformerLens 4.x ``TransformerBridge``.

Hooks used (``l`` is the layer):

* ``heads``: hook point: ``blocks.{l}.attn.hook_z``; tensor: ``(B, T, n_heads, d_head)``: the input
  of the output projection, split by head (ivkit hands interventions the ``(B, T, n_heads*d_head)``
  view)
* ``block``: hook point: ``blocks.{l}.hook_out`` (= ``hook_resid_post``); tensor: ``(B, T,
  d_model)``: the block's output, the same hook point as ``hook_resid_post``

A forward pass is ``bridge(input_ids, attention_mask=..., position_ids=...)``, on ivkit's own
left-padded token ids: the bridge prepends BOS only to *strings*, so positions and answers line
up with the other backends exactly.

Gotchas
-------
* Booting a bridge on a Hugging Face model **changes that model in place**: its blocks become
  bridge components and it switches to eager attention. The weights are shared, not copied.
  ``load_model(hf_model, tok, backend="transformer-lens")`` therefore alters ``hf_model``; pass a
  copy if you need it unchanged.
* ``bridge.enable_compatibility_mode()`` rewrites the weights in place (folds norms into the next
  layer, centres ``W_O``, folds value biases into ``b_O``). Head outputs then no longer mean what
  they mean in the original model (on GPT-2, ``hook_z`` moves), so ivkit refuses such a bridge.
* Gemma-3 text models built in code have no ``config.architectures``; ivkit passes the class name
  to the bridge so that it finds its adapter.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable

import torch
from einops import rearrange

from ...core.arch import lookup_spec
from ...core.errors import BackendError
from .base import Backend, Batch, HookedModel, Intervention, register_backend

log = logging.getLogger(__name__)


def _import_bridge():
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendError(
            f"backend='transformer-lens' needs TransformerLens 4.x ({e}): pip install 'transformer-lens>=4'"
        ) from None
    return TransformerBridge


def is_bridge(obj: Any) -> bool:
    """True for a TransformerLens ``TransformerBridge`` (without importing TransformerLens)."""
    return any(c.__name__ == "TransformerBridge" and c.__module__.startswith("transformer_lens")
               for c in type(obj).__mro__)


def check_bridge(bridge: Any) -> None:
    """Refuse a bridge whose weights were processed (compatibility mode)."""
    if getattr(bridge, "compatibility_mode", False) or getattr(bridge, "_weights_processed", False):
        raise BackendError(
            "this TransformerBridge is in compatibility mode: enable_compatibility_mode() folded the norms, "
            "centred W_O and folded value biases into the model's weights, so its head outputs no longer "
            "match the original model's. Boot a fresh bridge (TransformerBridge.boot_transformers(...)) and "
            "do not call enable_compatibility_mode() before handing it to ivkit"
        )


def boot_bridge(hf_model: Any, tokenizer: Any, name: str) -> Any:
    """Build a ``TransformerBridge`` around a loaded Hugging Face model, offline.

    The bridge wraps ``hf_model``'s own modules (no weight copy) and changes them in place; see the
    module's gotchas. Raises `BackendError` if TransformerLens has no adapter
    for the architecture.
    """
    TransformerBridge = _import_bridge()
    overrides = {}
    if not getattr(hf_model.config, "architectures", None):
        overrides["architectures"] = [type(hf_model).__name__]
    if tokenizer is not None and hasattr(tokenizer, "init_kwargs"):
        # ivkit hands the bridge token ids, never strings, so the bridge's tokenizer does not
        # change ivkit's numbers. Give it a shallow copy that says it adds BOS, so that the bridge
        # does not try to re-load the tokenizer from the hub (it would, offline, and fail).
        tokenizer = copy.copy(tokenizer)
        tokenizer.init_kwargs = {**tokenizer.init_kwargs, "add_bos_token": True,
                                 "name_or_path": tokenizer.init_kwargs.get("name_or_path") or name}
    try:
        return TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=str(next(hf_model.parameters()).device),
            dtype=next(hf_model.parameters()).dtype, hf_config_overrides=overrides or None)
    except (ValueError, NotImplementedError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(
            f"TransformerLens cannot build a bridge for {type(hf_model).__name__} "
            f"(model_type={getattr(hf_model.config, 'model_type', '?')!r}): {first}. Use backend='torch' or "
            f"'nnsight' for this architecture"
        ) from None


@register_backend
class TransformerLensBackend(Backend):
    """Runs the model through a ``TransformerBridge`` and its hook points."""

    name = "transformer-lens"
    aliases = ("tl", "transformerlens")
    requirement = "pip install 'transformer-lens>=4.3,<5'"
    supports_grad = True
    supports_fast = False
    fast_blocker = "a TransformerBridge replaces the blocks with its own components"

    @classmethod
    def wraps(cls, obj: Any) -> bool:
        return is_bridge(obj)

    @classmethod
    def unwrap(cls, obj: Any, tokenizer: Any, name: str | None) -> tuple[Any, Any, str]:
        hf_model = obj.original_model
        hf_model.eval()
        return (hf_model, tokenizer or obj.tokenizer,
                name or str(getattr(obj.cfg, "model_name", "") or type(hf_model).__name__))

    @classmethod
    def create(cls, hf_model: Any, tokenizer: Any, *, name: str, wrapper: Any = None,
               remote: bool | str = False) -> "TransformerLensBackend":
        if remote is not False:
            raise BackendError(f"remote execution (remote={remote!r}) goes through NDIF and needs backend='nnsight', "
                               f"not 'transformer-lens'")
        lookup_spec(hf_model)  # an unknown architecture gets ivkit's own error before the bridge's
        return cls(wrapper if wrapper is not None else boot_bridge(hf_model, tokenizer, name))

    def __init__(self, bridge: Any):
        check_bridge(bridge)
        self.bridge = bridge

    def hook_point(self, site: str, layer: int) -> Any:
        block = self.bridge.blocks[layer]
        return block.attn.hook_z if site == "heads" else block.hook_out

    def attach(self, model: HookedModel, intervention: Intervention) -> Callable[[], None]:
        handles = []

        def heads_hook(layer: int):
            def hook(z, hook):  # TransformerLens calls fn(tensor, hook=hook_point)
                flat = rearrange(z, "b t h d -> b t (h d)")
                new = intervention.edit(layer, flat)
                return None if new is None else rearrange(new, "b t (h d) -> b t h d", h=z.shape[2])
            return hook

        def block_hook(layer: int):
            def hook(h, hook):
                return intervention.edit(layer, h)
            return hook

        make = heads_hook if intervention.site == "heads" else block_hook
        try:
            for layer in intervention.layers:
                handles.append(self.hook_point(intervention.site, layer).add_hook(make(layer)))
        except BaseException:
            self._remove(handles)
            raise
        return lambda: self._remove(handles)

    @staticmethod
    def _remove(handles) -> None:
        for h in handles:
            h.hook.remove()

    def forward(self, model: HookedModel, batch: Batch, *, logits_to_keep: int = 1) -> torch.Tensor:
        check_bridge(self.bridge)
        logits = self.bridge(batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False, logits_to_keep=logits_to_keep)
        return logits.float()

    def describe(self) -> dict[str, Any]:
        import transformer_lens

        return {"backend": self.name, "transformer_lens": getattr(transformer_lens, "__version__", "?")}
