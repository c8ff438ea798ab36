"""ivkit: instruction vectors for language models.

Find the attention heads that carry "which task am I doing", build the vector they add up to,
inject it, and measure what it does::

    import ivkit
    model = ivkit.load_model("smollm2-135m-instruct")
    result = ivkit.extract(model, "capitalize", method="fast")
    result.effects.plot()                       # heads heatmap
    ivkit.evaluate_iv(model, "capitalize", result.iv).to_pandas()
"""

__version__ = "0.1.0"

from .errors import (
    AnswerTokenError,
    ArtifactError,
    BackendError,
    IncompatibleVectorError,
    InputError,
    IVKitError,
    ModelLoadError,
    TaskError,
    UnknownArchitectureError,
)
from .analysis import Tracking, track
from .backends import BACKENDS, Backend
from .checkpoints import Checkpoint, CheckpointError, CheckpointSeries, fingerprint
from .evaluate import (CONDITIONS, Evaluation, LayerSweep, Scores, evaluate_iv, layer_sweep, score_prompts,
                       wilson_interval)
from .extract import Extraction, GreedyPath, extract, filter_prompts, greedy_heads
from .finetune import FinetuneResult, finetune
from .generation import generate, generate_ids
from .hooks import add_to_residual, patch_head_outputs, patch_heads, perturb_head_outputs, record_head_outputs, record_residual
from .mediation import (
    METHODS,
    IndirectEffects,
    head_activations,
    indirect_effects,
    mean_head_activations,
    rank_agreement,
)
from .models import ARCHITECTURES, MODEL_ALIASES, ArchSpec, HeadGeometry, IVModel, load_model, register_architecture
from .plotting import plot_evaluation, plot_head_importance, plot_layer_sweep
from .tasks import (
    DEFAULT_TEMPLATE,
    PROMPT_STYLES,
    TASK_INSTRUCTIONS,
    EncodedPrompts,
    Example,
    Prompt,
    PromptTemplate,
    Task,
    TaskSplit,
    encode_prompts,
    list_tasks,
    load_task,
    make_prompt,
    sample_prompts,
)
from .vectors import INJECTIONS, InstructionVector, head_contributions, random_like

__all__ = [
    "__version__",
    # errors
    "IVKitError", "InputError", "ModelLoadError", "UnknownArchitectureError", "TaskError", "AnswerTokenError",
    "IncompatibleVectorError", "ArtifactError", "BackendError",
    # models
    "load_model", "IVModel", "ArchSpec", "HeadGeometry", "ARCHITECTURES", "MODEL_ALIASES", "register_architecture",
    # tasks
    "Task", "TaskSplit", "Example", "Prompt", "PromptTemplate", "EncodedPrompts", "DEFAULT_TEMPLATE",
    "PROMPT_STYLES", "TASK_INSTRUCTIONS", "load_task", "list_tasks", "make_prompt", "sample_prompts",
    "encode_prompts",
    # hooks
    "record_head_outputs", "patch_head_outputs", "patch_heads", "perturb_head_outputs", "add_to_residual",
    "record_residual",
    # backends
    "BACKENDS", "Backend",
    # mediation
    "head_activations", "mean_head_activations", "indirect_effects", "IndirectEffects", "METHODS",
    "rank_agreement",
    # vectors
    "InstructionVector", "INJECTIONS", "head_contributions", "random_like",
    # evaluation
    "score_prompts", "Scores", "layer_sweep", "LayerSweep", "evaluate_iv", "Evaluation", "CONDITIONS", "wilson_interval",
    # pipeline
    "extract", "Extraction", "filter_prompts", "greedy_heads", "GreedyPath", "generate", "generate_ids",
    # checkpoints and fine-tuning
    "CheckpointSeries", "Checkpoint", "CheckpointError", "fingerprint", "track", "Tracking", "finetune",
    "FinetuneResult",
    # plots
    "plot_head_importance", "plot_layer_sweep", "plot_evaluation",
]
