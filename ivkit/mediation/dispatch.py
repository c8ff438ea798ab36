"""Causal mediation: the average indirect effect (AIE) of every head, by one of three methods.

Concepts
--------
* **Mean head activation** ``mean[l, h]`` ``(d_head,)``: head ``h`` of layer ``l``'s output at the
  last prompt token, averaged over clean prompts (`ivkit.mean_head_activations`).
* **Indirect effect** of head ``(l, h)`` on a corrupted prompt: set that head's last-token output
  to ``mean[l, h]``, re-run, and take ``metric(patched) - metric(corrupted)``
  (`ivkit.mediation.metrics`; higher is better, so a positive effect means the patch helps).
* **AIE**: the mean over corrupted prompts (trials), ``(n_layers, n_heads)``.

Methods (`METHODS`, siblings below this dispatcher):

* ``"naive"`` (`naive`): one forward pass per (trial, layer, head), the oracle;
* ``"fast"`` (`fast`): the same numbers through the continuation engine;
* ``"attribution"`` (`attribution`): the first-order estimate
  ``(mean - z) · ∂metric/∂z``, all heads from one forward and one backward pass. Approximate.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Callable

from jaxtyping import Float
from torch import Tensor

from ..core.errors import BackendError, IncompatibleVectorError, InputError
from ..core.options import Method, MetricName, check_choice, unknown_option
from ..core.prompts import EncodedPrompts
from ..engine.blockcall import FastPathUnsupported
from ..engine.continuation import fast_unavailable
from ..models.model import IVModel
from .attribution import attribution_effects
from .fast import fast_effects
from .metrics import AnswerMetric, resolve_metric
from .naive import naive_effects
from .results import IndirectEffects

log = logging.getLogger(__name__)

#: method name -> function(model, items, mean_acts, metric, progress, **options) -> (per_trial, baseline)
METHODS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "naive": naive_effects,
    "fast": fast_effects,
    "attribution": attribution_effects,
}


def check_mean_activations(model: IVModel, mean_acts: Tensor) -> None:
    """Raise `IncompatibleVectorError` unless ``mean_acts`` is ``(n_layers, n_heads, d_head)``."""
    g = model.geometry
    want = (g.n_layers, g.n_heads, g.d_head)
    if tuple(mean_acts.shape) != want:
        raise IncompatibleVectorError(
            f"mean activations have shape {tuple(mean_acts.shape)} but {model.name} needs {want} "
            f"(n_layers, n_heads, d_head); they come from another model. Recompute them on this model"
        )


def resolve_method(model: IVModel, method: Method | None) -> Method:
    """The indirect-effect method to use: ``method``, or the backend's default when ``None``
    (``"fast"`` where the engine can run: torch, or nnsight locally; ``"naive"`` elsewhere).
    Raises a clear error for a method the backend cannot run."""
    blocker = fast_unavailable(model)
    if method is None:
        method = "naive" if blocker else "fast"
        if blocker:
            log.info("backend %s: indirect effects use method='naive' (the exact 'fast' engine needs the "
                     "Hugging Face modules here: backend='torch', or a local nnsight model)", model.backend.name)
    check_choice("method", method, Method)
    if method == "fast" and blocker:
        raise BackendError(
            f"method='fast' re-runs the Hugging Face blocks with ivkit's own attention, so it needs them on "
            f"this machine and unwrapped; the {model.backend.name} backend here does not give that "
            f"({blocker}). Use method='naive' (exact, slower) or 'attribution' with this backend, "
            f"or load the same weights with backend='torch'"
        )
    if method == "attribution" and not model.backend.supports_grad:
        raise BackendError(
            f"method='attribution' needs gradients through interventions, which the {model.backend.name} "
            f"backend does not give here. Use method='naive', or backend='torch' or 'transformer-lens'"
        )
    return method


def indirect_effects(
    model: IVModel,
    corrupted: EncodedPrompts,
    mean_acts: Float[Tensor, "layers heads d_head"],
    *,
    method: Method | None = None,
    metric: MetricName | AnswerMetric = "prob",
    progress: bool = True,
    info: dict[str, Any] | None = None,
    fallback: bool = True,
    **options: Any,
) -> IndirectEffects:
    """Average indirect effect of every head.

    Args:
        model: the model.
        corrupted: the corrupted prompts (``shuffled`` style), one trial each.
        mean_acts: ``(n_layers, n_heads, d_head)`` from `ivkit.mean_head_activations`.
        method: a key of `METHODS`; ``None``: ``"fast"`` where the backend can run it
            (torch, local nnsight), ``"naive"`` elsewhere (see `resolve_method`).
        metric: ``"prob"``, ``"logit"``, ``"nll"``, or an `AnswerMetric`.
        fallback: when ``"fast"`` cannot run on this model, compute the naive loop instead (the
            result records it) rather than raise.
        options: the method's own options (a mistyped one is an error): ``prompts_per_pass``,
            ``max_memory_mb``, ``guard_tol``, ``logits_rows`` for fast; ``batch_size`` for
            attribution.

    When ``"fast"`` cannot run on a model (`FastPathUnsupported`),
    the naive loop computes the same numbers instead, and the result records it: ``method`` is
    ``"naive"`` and ``info["fast_unavailable"]`` holds the reason (both saved in
    ``indirect_effects.json`` and ``iv.json``). Any other error propagates.
    """
    method = resolve_method(model, method)
    answer_metric = resolve_metric(metric)
    if len(corrupted) == 0:
        raise InputError("indirect_effects needs at least one corrupted prompt")
    check_mean_activations(model, mean_acts)
    items = answer_metric.prepare(corrupted)
    info = {"backend": model.backend.name, **dict(info or {})}
    t0 = time.perf_counter()
    try:
        per_trial, baseline = _call(METHODS[method], method, model, items, mean_acts.float(), answer_metric,
                                    progress, options)
    except FastPathUnsupported as e:
        if method != "fast" or not fallback:
            raise
        log.warning("fast path unavailable for %s (%s); computing the naive per-head loop instead",
                    model.model_type, e)
        info["fast_unavailable"] = str(e)
        method = "naive"
        per_trial, baseline = naive_effects(model, items, mean_acts.float(), answer_metric, progress)
    seconds = time.perf_counter() - t0
    log.info("indirect effects (%s, %d trials x %d heads) took %.1f s", method, len(items),
             model.geometry.n_total_heads, seconds)
    return IndirectEffects(per_trial.mean(0), per_trial, baseline, method, answer_metric.name, seconds, info)


def _call(fn: Callable[..., Any], method: str, *args: Any) -> Any:
    """``fn(*args[:-1], **options)``, with a mistyped option named as such (not a TypeError deep inside)."""
    *positional, options = args
    known = [p for p, v in inspect.signature(fn).parameters.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for name in options:
        if name not in known:
            raise unknown_option(name, known, f"method={method!r}")
    return fn(*positional, **options)
