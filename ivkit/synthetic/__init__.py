"""Floor 9: the synthetic set-up of Kotha et al. (ICLR 2024), where the true task is known.

A small GPT-2 learns in-context linear regression on a mixture of two priors over the weights
(a discrete set of 64 vectors and a Gaussian), is fine-tuned on the discrete prior only, and is
measured against the Bayes-optimal predictors:

* `data`: the priors and prompts (`RegressionTask`,
  `sample_prompts`);
* `model`: the network (`RegressionGPT2`) and the view ivkit's hooks
  attach to (`hookable`);
* `train`: `pretrain`, `finetune` (seeded, resumable);
* `bayes`: ridge, the discrete posterior, their mixture;
* `measure`: losses by distance and by example count, the conjugate
  (labels times alpha), the implied prior weight;
* `heads`: which heads carry the "which prior" inference;
* `study`: all of it, resumable (`run_study`);
* `cli`: the ``ivkit synthetic`` commands.

Imports only floors 0-8 (never `ivkit.cli` or `ivkit.conjugate`).
"""

from .bayes import bayes_predictions, discrete_predictions, mixture_predictions, ridge_predictions
from .data import RegressionPrompts, RegressionTask, discrete_set, distance_to_discrete, sample_prompts
from .heads import compare_rankings, patch_from_pretrained, rank_heads
from .measure import conjugate_sweep, eval_prompts, implied_prior, measure_losses, predict
from .model import ModelConfig, RegressionGPT2, hookable
from .study import STUDY_PRETRAIN, STUDY_TASK, StudyConfig, StudyResult, run_study
from .train import TrainConfig, TrainRun, finetune, load_checkpoint, pretrain

__all__ = [
    "STUDY_PRETRAIN", "STUDY_TASK",
    "ModelConfig", "RegressionGPT2", "RegressionPrompts", "RegressionTask", "StudyConfig", "StudyResult", "TrainConfig",
    "TrainRun", "bayes_predictions", "compare_rankings", "conjugate_sweep", "discrete_predictions", "discrete_set",
    "distance_to_discrete", "eval_prompts", "finetune", "hookable", "implied_prior", "load_checkpoint", "measure_losses",
    "mixture_predictions", "patch_from_pretrained", "pretrain", "predict", "rank_heads", "ridge_predictions", "run_study",
    "sample_prompts",
]
