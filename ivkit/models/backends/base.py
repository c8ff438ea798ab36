"""The backend interface: how ivkit reads and edits a model's activations.

Concepts
--------
Everything ivkit measures or changes happens at two *sites* of every layer ``l``:

* ``"heads"``: what: per-head outputs: the *input* of the attention output projection ``W_O`` (heads
  concatenated in order); tensor seen by interventions: ``(B, T, n_heads * d_head)``
* ``"block"``: what: the output of decoder block ``l`` (the residual stream); tensor seen by
  interventions: ``(B, T, d_model)``

An `Intervention` is a small object with ``site``, ``layers`` and a method
``edit(layer, x) -> x' | None`` that either returns a replacement for ``x`` or ``None`` (it only
read ``x``). A `Backend` knows how to run the model on a left-padded
`Batch` and call the attached interventions at their sites, in layer order.
The rest of ivkit (mean activations, indirect effects, building and injecting an IV, evaluation)
only attaches interventions and calls `Backend.forward`; it never touches a framework's own
hook API. Three backends exist:

* ``torch`` (`ivkit.backends.torch_backend`): forward hooks on the Hugging Face modules;
* ``transformer-lens`` (`ivkit.backends.tl_backend`): hook points of a TransformerLens 4.x
  ``TransformerBridge`` (``blocks.{l}.attn.hook_z``, ``blocks.{l}.hook_out``);
* ``nnsight`` (`ivkit.backends.nnsight_backend`): interventions inside an nnsight 0.8 trace
  (``...self_attn.o_proj.input``, ``...layers[l].output``), locally or on NDIF.

Gotchas
-------
* Interventions are called in layer order, heads site before block site within a layer. nnsight
  requires this order; the others follow it anyway.
* An ``edit`` must not keep references to ``x`` beyond the call unless it detaches or clones it
  (backends may reuse buffers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Protocol, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from ...core.arch import ArchSpec, HeadGeometry
from ...core.errors import BackendError

Site = Literal["heads", "block"]


@dataclass(frozen=True, eq=False)
class Batch:
    """A left-padded batch of token sequences.

    Attributes:
        input_ids: ``(batch, pos)`` token ids, left-padded.
        attention_mask: ``(batch, pos)``, 1 for real tokens, 0 for padding.
        position_ids: ``(batch, pos)``, 0 at each row's first real token, so that a padded row
            sees the same positions as the row alone.
        lengths: ``(batch,)`` number of real tokens per row.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])



class HookedModel(Protocol):
    """What a backend needs of a model (`ivkit.IVModel` has it): the Hugging Face module,
    the architecture spec that finds its parts, and its head geometry."""

    model: Any
    spec: ArchSpec
    geometry: HeadGeometry

    def block(self, layer: int) -> torch.nn.Module: ...

    def attn_out_proj(self, layer: int) -> torch.nn.Module: ...


class Intervention:
    """Something that reads or edits one site of some layers during a forward pass.

    Attributes:
        site: ``"heads"`` or ``"block"`` (see the module docstring for shapes).
        layers: the layers it applies to.
    """

    site: Site = "heads"
    layers: Sequence[int] = ()
    #: True if `edit` only reads (always returns ``None``): a remote backend may then call it
    #: after the pass, on the saved tensor.
    reads_only: bool = False

    def edit(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:  # pragma: no cover - abstract
        """Called with the site's tensor of ``layer``; return a replacement or ``None``."""
        raise NotImplementedError


class Backend(ABC):
    """Runs a model and calls interventions at their sites.

    Subclasses implement `attach` and `forward`, say how they are made
    (`create`) and which framework objects they wrap (`wraps`, `unwrap`), and
    register themselves with `register_backend`; `ivkit.load_model` asks the
    registry, so it names no backend. Attributes say what the backend can do, so that callers fail
    early with a clear message:

    * ``supports_grad``: gradients flow through interventions (``method="attribution"``);
    * ``supports_fast``: the exact continuation engine of `ivkit.engine` can run on it
      (it needs the Hugging Face modules themselves).
    """

    name: ClassVar[str] = "?"
    #: Other spellings `get_backend` accepts.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: What the backend needs installed, for the error when it is missing.
    requirement: ClassVar[str] = ""
    supports_grad: bool = True
    supports_fast: bool = False
    #: Can run on a model whose weights are elsewhere (``remote=True``).
    supports_remote: ClassVar[bool] = False
    #: Why ``method="fast"`` cannot run here (shown in its error), when it cannot.
    fast_blocker: str = ""

    # ---- how the backend is made (class level) -------------------------------------------

    @classmethod
    def wraps(cls, obj: Any) -> bool:
        """True if ``obj`` is a model object of this backend's framework (a bridge, a traced model)."""
        return False

    @classmethod
    def unwrap(cls, obj: Any, tokenizer: Any, name: str | None) -> tuple[Any, Any, str]:
        """``(hf_model, tokenizer, name)`` of a framework object `wraps` accepts."""
        raise BackendError(f"the {cls.name} backend wraps no framework objects")  # pragma: no cover

    @classmethod
    @abstractmethod
    def create(cls, hf_model: Any, tokenizer: Any, *, name: str, wrapper: Any = None,
               remote: bool | str = False) -> "Backend":
        """The backend for a loaded Hugging Face model (``wrapper``: the framework object it came
        in, when `unwrap` took it apart)."""

    @classmethod
    def create_remote(cls, ref: str, tokenizer: Any, *, name: str) -> tuple[Any, Any, "Backend"]:
        """``(hf_model, tokenizer, backend)`` for a hub id whose weights stay remote."""
        raise BackendError(f"remote execution runs on NDIF through nnsight, which backend {cls.name!r} cannot do: pass "
                           f"backend='nnsight' (on the CLI: --backend nnsight)")

    @abstractmethod
    def attach(self, model: HookedModel, intervention: Intervention) -> Callable[[], None]:
        """Make ``intervention`` active for every later `forward`; return a function that
        detaches it."""

    @abstractmethod
    def forward(self, model: HookedModel, batch: Batch, *, logits_to_keep: int = 1) -> torch.Tensor:
        """Run the model on ``batch`` with the attached interventions.

        Returns:
            float32 logits ``(B, logits_to_keep, vocab)`` of the last positions
            (``logits_to_keep=0``: all ``T`` positions).
        """

    def device(self, model: HookedModel) -> torch.device:
        """Where input tensors go: the device of the model's first parameter."""
        return next(model.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend loadable by its ``name`` and ``aliases``."""
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> tuple[str, ...]:
    """The names `ivkit.load_model` accepts for ``backend=``."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (or one of its aliases)."""
    key = str(name).lower().replace("_", "-")
    for cls in _REGISTRY.values():
        if key == cls.name or key in cls.aliases:
            return cls
    from ...core.errors import ModelLoadError

    raise ModelLoadError(f"unknown backend {name!r}: use one of {', '.join(_REGISTRY)}")


def backend_for_object(obj: Any) -> type[Backend] | None:
    """The backend whose framework ``obj`` belongs to, or None (a plain Hugging Face model)."""
    return next((cls for cls in _REGISTRY.values() if cls.wraps(obj)), None)
