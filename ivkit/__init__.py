"""ivkit: instruction vectors for language models.

Find the attention heads that carry "which task am I doing", build the vector they add up to,
inject it, and measure what it does:

    import ivkit
    model = ivkit.load_model("smollm2-135m-instruct")
    result = ivkit.extract(model, "capitalize")
    result.effects.plot()                       # heads heatmap
    ivkit.evaluate_iv(model, "capitalize", result.iv).to_pandas()

The names below are the public API, loaded on first use (``import ivkit`` imports nothing
heavy). Everything else lives in the subpackages, one floor each, data flowing downward only:
``core`` -> ``models`` -> ``engine`` -> ``activations`` -> ``mediation`` -> ``vectors`` ->
``evaluation`` -> ``pipeline`` -> ``analysis`` / ``training`` -> ``cli`` (see
``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> the module that defines it
_API: dict[str, str] = {
    # models
    "load_model": "ivkit.models.loading",
    "IVModel": "ivkit.models.model",
    "ArchSpec": "ivkit.core.arch",
    "register_architecture": "ivkit.core.arch",
    "CheckpointSeries": "ivkit.models.checkpoints",
    # tasks and prompts
    "load_task": "ivkit.core.tasks",
    "list_tasks": "ivkit.core.tasks",
    "Task": "ivkit.core.tasks",
    "PromptTemplate": "ivkit.core.prompts",
    # activations and effects
    "mean_head_activations": "ivkit.activations",
    "indirect_effects": "ivkit.mediation.dispatch",
    "IndirectEffects": "ivkit.mediation.results",
    # the vector
    "InstructionVector": "ivkit.vectors.iv",
    # evaluation
    "score_prompts": "ivkit.evaluation.scoring",
    "layer_sweep": "ivkit.evaluation.sweep",
    "evaluate_iv": "ivkit.evaluation.conditions",
    "Evaluation": "ivkit.evaluation.conditions",
    "generate": "ivkit.evaluation.generation",
    # the pipeline
    "extract": "ivkit.pipeline.extract",
    "ExtractConfig": "ivkit.pipeline.config",
    "Extraction": "ivkit.pipeline.extract",
    # across checkpoints
    "track": "ivkit.analysis.tracking",
    "Tracking": "ivkit.analysis.tracking",
    "finetune": "ivkit.training.finetune",
    # errors
    "IVKitError": "ivkit.core.errors",
    "InputError": "ivkit.core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ivkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .activations import mean_head_activations
    from .analysis.tracking import Tracking, track
    from .core.arch import ArchSpec, register_architecture
    from .core.errors import InputError, IVKitError
    from .core.prompts import PromptTemplate
    from .core.tasks import Task, list_tasks, load_task
    from .evaluation.conditions import Evaluation, evaluate_iv
    from .evaluation.generation import generate
    from .evaluation.scoring import score_prompts
    from .evaluation.sweep import layer_sweep
    from .mediation.dispatch import indirect_effects
    from .mediation.results import IndirectEffects
    from .models.checkpoints import CheckpointSeries
    from .models.loading import load_model
    from .models.model import IVModel
    from .pipeline.config import ExtractConfig
    from .pipeline.extract import Extraction, extract
    from .training.finetune import finetune
    from .vectors.iv import InstructionVector
