"""The architecture table: where ivkit finds the parts of a model it reads and edits.

ivkit works on decoder-only causal LMs. For each one it needs to know:

* the **decoder blocks** (a ``ModuleList``), where an IV is added to the residual stream;
* each block's **attention output projection** (``W_O``; ``self_attn.o_proj`` in Llama), whose
  *input* is the concatenation of the per-head outputs, ``(batch, pos, n_heads * d_head)``;
* the geometry: ``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_head``, ``d_model``.

`ARCHITECTURES` maps a config's ``model_type`` to an `ArchSpec` holding those module
paths; `register_architecture` adds one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import InputError, UnknownArchitectureError


@dataclass(frozen=True)
class ArchSpec:
    """Where ivkit finds the parts it hooks, as dotted module paths.

    Attributes:
        layers: path from the causal-LM object to the ``ModuleList`` of decoder blocks.
        attn_out_proj: path from one decoder block to its attention output projection. Its input
            is ``(batch, pos, n_heads * d_head)``, heads concatenated in order.
        final_norm: path from the causal-LM object to the final norm before the unembedding (the
            unembedding itself is ``get_output_embeddings()``).
        post_attn_norm: path from a block to a norm applied to the *output* of the attention
            projection before it joins the residual stream (Gemma 2/3), or ``None``.
    """

    layers: str
    attn_out_proj: str
    final_norm: str
    post_attn_norm: str | None = None


_LLAMA_LIKE = ArchSpec(layers="model.layers", attn_out_proj="self_attn.o_proj", final_norm="model.norm")
_GEMMA_LIKE = ArchSpec(
    layers="model.layers",
    attn_out_proj="self_attn.o_proj",
    final_norm="model.norm",
    post_attn_norm="post_attention_layernorm",
)

#: model_type -> ArchSpec. Every entry is exercised by a tiny random-init model in the tests.
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _GEMMA_LIKE,
    "gemma3_text": _GEMMA_LIKE,
    "gpt2": ArchSpec(layers="transformer.h", attn_out_proj="attn.c_proj", final_norm="transformer.ln_f"),
    "gpt_neox": ArchSpec(layers="gpt_neox.layers", attn_out_proj="attention.dense",
                         final_norm="gpt_neox.final_layer_norm"),
}


def register_architecture(model_type: str, spec: ArchSpec, *, overwrite: bool = False) -> None:
    """Teach ivkit a new architecture.

    Example:

        ivkit.register_architecture(
            "olmo2", ivkit.ArchSpec(layers="model.layers", attn_out_proj="self_attn.o_proj",
                                    final_norm="model.norm"))
    """
    if model_type in ARCHITECTURES and not overwrite:
        raise InputError(f"architecture {model_type!r} is already registered; pass overwrite=True")
    ARCHITECTURES[model_type] = spec


def get_module(root: Any, path: str) -> Any:
    """The attribute at a dotted ``path`` below ``root`` (digits index lists: ``model.layers.3``)."""
    obj: Any = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@dataclass(frozen=True)
class HeadGeometry:
    """Shapes of the attention heads.

    ``n_heads * d_head`` is the width of the attention projection's input. It need not equal
    ``d_model``: gemma-3-270m has 4 x 256 = 1024 wide heads and d_model 640.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def geometry_from_config(config: Any) -> HeadGeometry:
    """The head geometry a Hugging Face config describes."""
    n_layers = int(config.num_hidden_layers)
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    d_model = int(config.hidden_size)
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    return HeadGeometry(n_layers, n_heads, n_kv, int(d_head), d_model)


def lookup_spec(model: Any) -> ArchSpec:
    """The `ArchSpec` of a Hugging Face causal LM, or a clear error naming the fix."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    known = ", ".join(sorted(ARCHITECTURES))
    raise UnknownArchitectureError(
        f"unknown architecture {type(model).__name__} (model_type={model_type!r}); ivkit knows: {known}. "
        f"Register it with ivkit.register_architecture({model_type!r}, ivkit.ArchSpec(layers='model.layers', "
        f"attn_out_proj='self_attn.o_proj', final_norm='model.norm'))  (adjust the module paths)"
    )
