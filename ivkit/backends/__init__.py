"""Backends: the frameworks ivkit can run a model through (see :mod:`ivkit.backends.base`).

=====================  ============================================  ==============================
name                   model form                                    needs
=====================  ============================================  ==============================
``torch``              a Hugging Face ``PreTrainedModel``             nothing more
``transformer-lens``   a TransformerLens 4.x ``TransformerBridge``    ``pip install transformer-lens``
``nnsight``            an nnsight 0.8 ``TransformersModel`` /         ``pip install nnsight``
                       ``LanguageModel``
=====================  ============================================  ==============================
"""

from __future__ import annotations

from .base import Backend, Intervention
from .torch_backend import TorchBackend

#: The names :func:`ivkit.load_model` accepts for ``backend=``.
BACKENDS = ("torch", "transformer-lens", "nnsight")

__all__ = ["BACKENDS", "Backend", "Intervention", "TorchBackend"]
