"""Backends: the frameworks ivkit can run a model through (see `ivkit.models.backends.base`).

* ``torch``: model form: a Hugging Face ``PreTrainedModel``; needs: nothing more
* ``transformer-lens``: model form: a TransformerLens 4.x ``TransformerBridge``; needs: ``pip
  install transformer-lens``
* ``nnsight``: model form: an nnsight 0.8 ``TransformersModel`` / ``LanguageModel``; needs: ``pip
  install nnsight``

Each backend registers itself (`register_backend`); a new one is a module with a
registered `Backend` subclass, imported here. None imports its framework until it is used.
"""

from __future__ import annotations

from . import nnsight_backend, tl_backend, torch_backend  # noqa: F401  (each registers itself)
from .base import Backend, Intervention, backend_for_object, backend_names, get_backend, register_backend

#: The names `ivkit.load_model` accepts for ``backend=``.
BACKENDS = backend_names()

__all__ = ["BACKENDS", "Backend", "Intervention", "backend_for_object", "backend_names", "get_backend",
           "register_backend"]
