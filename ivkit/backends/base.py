"""The backend interface: how ivkit reads and edits a model's activations.

Concepts
--------
Everything ivkit measures or changes happens at two *sites* of every layer ``l``:

===========  ======================================================  ===========================
site         what                                                    tensor seen by interventions
===========  ======================================================  ===========================
``"heads"``  per-head outputs: the *input* of the attention output   ``(B, T, n_heads * d_head)``
             projection ``W_O`` (heads concatenated in order)
``"block"``  the output of decoder block ``l`` (the residual stream)  ``(B, T, d_model)``
===========  ======================================================  ===========================

An :class:`Intervention` is a small object with ``site``, ``layers`` and a method
``edit(layer, x) -> x' | None`` that either returns a replacement for ``x`` or ``None`` (it only
read ``x``). A :class:`Backend` knows how to run the model on a left-padded
:class:`~ivkit.models.Batch` and call the attached interventions at their sites, in layer order.
The rest of ivkit (mean activations, indirect effects, building and injecting an IV, evaluation)
only attaches interventions and calls :meth:`Backend.forward`; it never touches a framework's own
hook API. Three backends exist:

* ``torch`` (:mod:`ivkit.backends.torch_backend`): forward hooks on the Hugging Face modules;
* ``transformer-lens`` (:mod:`ivkit.backends.tl_backend`): hook points of a TransformerLens 4.x
  ``TransformerBridge`` (``blocks.{l}.attn.hook_z``, ``blocks.{l}.hook_out``);
* ``nnsight`` (:mod:`ivkit.backends.nnsight_backend`): interventions inside an nnsight 0.8 trace
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
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..models import Batch, IVModel

Site = Literal["heads", "block"]


class Intervention:
    """Something that reads or edits one site of some layers during a forward pass.

    Attributes:
        site: ``"heads"`` or ``"block"`` (see the module docstring for shapes).
        layers: the layers it applies to.
    """

    site: Site = "heads"
    layers: Sequence[int] = ()
    #: True if :meth:`edit` only reads (always returns ``None``): a remote backend may then call it
    #: after the pass, on the saved tensor.
    reads_only: bool = False

    def edit(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:  # pragma: no cover - abstract
        """Called with the site's tensor of ``layer``; return a replacement or ``None``."""
        raise NotImplementedError


class Backend(ABC):
    """Runs a model and calls interventions at their sites.

    Subclasses implement :meth:`attach` and :meth:`forward`. Class attributes say what the backend
    can do, so that callers fail early with a clear message:

    * ``supports_grad``: gradients flow through interventions (``method="attribution"``);
    * ``supports_fast``: the exact continuation engine of :mod:`ivkit.fast` can run on it
      (it needs the Hugging Face modules themselves).
    """

    name: str = "?"
    supports_grad: bool = True
    supports_fast: bool = False

    @abstractmethod
    def attach(self, model: "IVModel", intervention: Intervention) -> Callable[[], None]:
        """Make ``intervention`` active for every later :meth:`forward`; return a function that
        detaches it."""

    @abstractmethod
    def forward(self, model: "IVModel", batch: "Batch", *, logits_to_keep: int = 1) -> torch.Tensor:
        """Run the model on ``batch`` with the attached interventions.

        Returns:
            float32 logits ``(B, logits_to_keep, vocab)`` of the last positions
            (``logits_to_keep=0``: all ``T`` positions).
        """

    def device(self, model: "IVModel") -> torch.device:
        """Where input tensors go: the device of the model's first parameter."""
        return next(model.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
