"""Floor 4: causal mediation, from mean head activations and corrupted prompts to the average
indirect effect of every head. `indirect_effects` dispatches to the sibling methods
(``naive``, ``fast``, ``attribution``) with a metric from `metrics`."""

from .dispatch import METHODS, check_mean_activations, indirect_effects, resolve_method
from .metrics import METRICS, AnswerMetric, MetricInputs
from .results import IndirectEffects

__all__ = ["METHODS", "METRICS", "AnswerMetric", "IndirectEffects", "MetricInputs", "check_mean_activations",
           "indirect_effects", "resolve_method"]
