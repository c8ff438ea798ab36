"""The loaded model: `IVModel`, left-padded batches, and the forward pass through a backend.

An `IVModel` holds a Hugging Face causal LM, its tokenizer, the `ArchSpec`
that finds its blocks and attention output projections, its `HeadGeometry`, and the
`Backend` that runs it. Every forward pass in ivkit goes through
`IVModel.forward`, on a `Batch` made by `IVModel.make_batch`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.arch import ArchSpec, geometry_from_config, get_module, lookup_spec
from ..core.errors import InputError, ModelLoadError, UnknownArchitectureError
from .backends.base import Batch
from .backends.torch_backend import TorchBackend


class IVModel:
    """A causal LM plus what ivkit needs to know about it.

    Attributes:
        model: the ``transformers`` ``PreTrainedModel`` (float32, eval mode).
        tokenizer: its tokenizer.
        name: the id recorded in saved artifacts (alias, hub id or path).
        spec: the `ArchSpec` used to find blocks and projections.
        geometry: the `HeadGeometry`.
        backend: the `Backend` that runs the model (``torch``,
            ``transformer-lens`` or ``nnsight``).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None, spec: ArchSpec | None = None,
                 prepend_bos: bool | None = None, backend: Any = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_type: str = str(getattr(model.config, "model_type", type(model).__name__))
        self.spec = spec or lookup_spec(model)
        self.name = name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        self.geometry = geometry_from_config(model.config)
        self._check_geometry()
        if tokenizer is None:
            raise ModelLoadError(
                f"no tokenizer for {self.name}: pass tokenizer=... to load_model together with the model"
            )
        self.pad_token_id = _pad_token_id(tokenizer, model)
        #: Start every prompt with the BOS token: True forces it, False strips it, None keeps what
        #: the tokenizer does by default.
        self.prepend_bos = prepend_bos
        if backend is None:
            backend = TorchBackend()
        #: The `Backend` that runs forward passes and interventions.
        self.backend = backend

    def _check_geometry(self) -> None:
        g = self.geometry
        try:
            n_blocks = len(self.blocks)
            proj = self.attn_out_proj(0)
        except (AttributeError, IndexError, TypeError) as e:
            raise UnknownArchitectureError(
                f"{type(self.model).__name__} (model_type={self.model_type!r}) does not have the modules its "
                f"ArchSpec names ({self.spec}): {e}. Fix the spec with ivkit.register_architecture(..., overwrite=True)"
            ) from None
        if n_blocks != g.n_layers:
            raise UnknownArchitectureError(
                f"{self.spec.layers} has {n_blocks} blocks but the config says {g.n_layers} layers"
            )
        width = _in_features(proj)
        if width is not None and width != g.n_heads * g.d_head:
            raise UnknownArchitectureError(
                f"the attention output projection of {self.model_type} takes {width} features, not "
                f"n_heads*d_head = {g.n_heads}*{g.d_head}; its heads cannot be split. Register a spec "
                f"that points at the right module"
            )

    # ---- structure -----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where ivkit puts input tensors (the model's device; the CPU for a remote model)."""
        return self.backend.device(self)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The decoder blocks, ``n_layers`` of them."""
        return get_module(self.model, self.spec.layers)

    def block(self, layer: int) -> torch.nn.Module:
        return self.blocks[layer]

    def attn_out_proj(self, layer: int) -> torch.nn.Module:
        """The attention output projection of ``layer``: input ``(batch, pos, n_heads*d_head)``,
        output ``(batch, pos, d_model)``."""
        return get_module(self.block(layer), self.spec.attn_out_proj)

    def post_attn_norm(self, layer: int) -> torch.nn.Module | None:
        """The norm applied to the attention output before the residual add (Gemma), or None."""
        if self.spec.post_attn_norm is None:
            return None
        return get_module(self.block(layer), self.spec.post_attn_norm)

    def final_norm(self) -> torch.nn.Module:
        """The norm before the unembedding."""
        return get_module(self.model, self.spec.final_norm)

    def config_hash(self) -> str:
        """A short hash of the model config's architecture fields (not the weights)."""
        cfg = self.model.config.to_dict()
        keep = {
            k: v
            for k, v in sorted(cfg.items())
            if not k.startswith("_") and k not in {"transformers_version", "torch_dtype", "dtype",
                                                    "quantization_config", "architectures", "use_cache"}
        }
        blob = json.dumps(keep, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """What names these weights in a run directory's stage keys: the id, the config hash and a
        digest of a sample of the weights (the first and last blocks' attention output
        projections and the unembedding), so a resumed run on other weights starts afresh."""
        h = hashlib.sha256()
        for mod in (self.attn_out_proj(0), self.attn_out_proj(self.geometry.n_layers - 1),
                    self.model.get_output_embeddings()):
            w = getattr(mod, "weight", None)
            if w is not None and w.device.type != "meta":
                h.update(w.detach().reshape(-1)[:65536].to("cpu", torch.float32).numpy().tobytes())
        return {"name": self.name, "config_hash": self.config_hash(), "weights_sample": h.hexdigest()[:16]}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_type": self.model_type, **self.geometry.to_dict()}

    def __repr__(self) -> str:
        g = self.geometry
        return (f"IVModel({self.name!r}, {self.model_type}, layers={g.n_layers}, heads={g.n_heads} "
                f"(kv {g.n_kv_heads}), d_head={g.d_head}, d_model={g.d_model})")

    # ---- tokenisation and batching -------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``.

        With ``add_special_tokens``, the BOS token follows `prepend_bos`: by default what
        the tokenizer adds (BOS for Llama-2/Gemma tokenizers; none for SmolLM2 or GPT-2)."""
        ids = list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if not add_special_tokens or self.prepend_bos is None or bos is None:
            return ids
        has = bool(ids) and ids[0] == bos
        if self.prepend_bos and not has:
            return [bos] + ids
        if not self.prepend_bos and has:
            return ids[1:]
        return ids

    def make_batch(self, sequences: Sequence[Sequence[int]]) -> Batch:
        """Left-pad token sequences into a `Batch` on the model's device."""
        if not sequences:
            raise InputError("make_batch got no sequences")
        lengths = [len(s) for s in sequences]
        if min(lengths) == 0:
            raise InputError("make_batch got an empty token sequence")
        width = max(lengths)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[i, width - len(seq):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        return Batch(ids.to(dev), mask.to(dev), pos.to(dev), torch.as_tensor(lengths).to(dev))

    def forward(self, batch: Batch, *, logits_to_keep: int = 1) -> Float[Tensor, "batch keep vocab"]:
        """Run the model through its backend, with every attached intervention.

        Returns:
            float32 logits ``(batch, logits_to_keep, vocab)`` of the last positions;
            ``logits_to_keep=0`` keeps all positions.
        """
        return self.backend.forward(self, batch, logits_to_keep=logits_to_keep)


def _pad_token_id(tokenizer: Any, model: Any) -> int:
    for cand in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None),
                 getattr(model.config, "pad_token_id", None), getattr(model.config, "eos_token_id", None)):
        if isinstance(cand, int):
            return cand
        if isinstance(cand, (list, tuple)) and cand:
            return int(cand[0])
    return 0  # padding is masked out, so any id works


def _in_features(module: Any) -> int | None:
    if isinstance(module, torch.nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if weight is not None and type(module).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
        return int(weight.shape[0])
    return None


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), in a fixed order."""
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
