"""Backends: the frameworks ivkit can run a model through (see `ivkit.models.backends.base`).

=====================  ============================================  ==============================
name                   model form                                    needs
=====================  ============================================  ==============================
``torch``              a Hugging Face ``PreTrainedModel``             nothing more
``transformer-lens``   a TransformerLens 4.x ``TransformerBridge``    ``pip install transformer-lens``
``nnsight``            an nnsight 0.8 ``TransformersModel`` /         ``pip install nnsight``
                       ``LanguageModel``
=====================  ============================================  ==============================

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
