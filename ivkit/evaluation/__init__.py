"""Floor 6: what an IV does. Scoring prompts (`scoring`), choosing the
injection layer on the validation split (`sweep`), the six-condition
evaluation on the test split (`conditions`), and steered generation
(`generation`)."""

from .conditions import CONDITIONS, Evaluation, evaluate_iv, evaluation_prompts, iv_protocol
from .generation import generate, generate_ids
from .scoring import Scores, score_prompts
from .sweep import LayerSweep, layer_sweep

__all__ = ["CONDITIONS", "Evaluation", "LayerSweep", "Scores", "evaluate_iv", "evaluation_prompts", "generate",
           "generate_ids", "iv_protocol", "layer_sweep", "score_prompts"]
