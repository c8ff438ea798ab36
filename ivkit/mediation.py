"""Mean head activations and causal mediation (average indirect effects, AIE).

Concepts
--------
* **Mean head activation** ``mean[l, h]`` ``(d_head,)``: head ``h`` of layer ``l``'s output at the
  last prompt token, averaged over clean prompts.
* **Indirect effect** of head ``(l, h)`` on a corrupted prompt: set that head's last-token output
  to ``mean[l, h]``, re-run, and take ``metric(patched) - metric(corrupted)``.
* **AIE**: the mean over corrupted prompts (trials). ``(n_layers, n_heads)``.

Metrics (higher is better, so a positive effect means the patch helps):

* ``"prob"``: probability of the answer's first token at the last position (Todd et al.).
* ``"logit"``: the raw logit of that token (linear in the residual stream; handy for attribution).
* ``"nll"``: log-likelihood of the whole answer; its effect is ``-ΔNLL`` (Jiang et al.'s metric
  for generation tasks). The patch is applied at the last *prompt* token.

Methods:

* ``"naive"``: one forward pass per (trial, layer, head) at batch size 1. Slow and simple; it is
  the oracle that faster methods are tested against.
* ``"fast"``: the same numbers, re-running only the last positions from the patched layer up
  over the cached prefix (:mod:`ivkit.fast`).
* ``"attribution"``: the first-order estimate ``(mean - z) · ∂metric/∂z``, all heads from one
  forward and one backward pass (:mod:`ivkit.attribution`). Approximate.

:data:`METHODS` maps each name to its function.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import ArtifactError, IncompatibleVectorError, InputError
from .hooks import patch_head_outputs, record_head_outputs
from .attribution import attribution_effects
from .blockcall import FastPathUnsupported
from .fast import fast_effects
from .io import atomic_write_text, progress_bar
from .models import IVModel, length_batches
from .tasks import EncodedPrompts

log = logging.getLogger(__name__)

METRICS = ("prob", "logit", "nll")
#: Metrics read at the last position only (the others span the whole answer).
FIRST_TOKEN_METRICS = ("prob", "logit")


# --------------------------------------------------------------------------------------------
# Mean activations
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def head_activations(model: IVModel, prompts: EncodedPrompts, *, batch_size: int = 16,
                     progress: bool = True) -> torch.Tensor:
    """Every head's output at each prompt's last token.

    Returns:
        ``(n_prompts, n_layers, n_heads, d_head)``, float32, in prompt order.
    """
    g = model.geometry
    out = torch.empty(len(prompts), g.n_layers, g.n_heads, g.d_head)
    batches = length_batches([len(s) for s in prompts.input_ids], batch_size)
    for idx in progress_bar(batches, desc="head activations", progress=progress):
        batch = model.make_batch([prompts.input_ids[i] for i in idx])
        with record_head_outputs(model) as rec:
            model.forward(batch)
        out[idx] = rec.stack().float().cpu()
    return out


def mean_head_activations(model: IVModel, prompts: EncodedPrompts, *, batch_size: int = 16,
                          progress: bool = True) -> torch.Tensor:
    """Mean of :func:`head_activations` over prompts: ``(n_layers, n_heads, d_head)``.

    Batched with left padding; equal to batch size 1 within float32 rounding.
    """
    if len(prompts) == 0:
        raise InputError("mean_head_activations needs at least one prompt")
    return head_activations(model, prompts, batch_size=batch_size, progress=progress).mean(0)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class IndirectEffects:
    """Result of :func:`indirect_effects`.

    Attributes:
        aie: ``(n_layers, n_heads)`` average indirect effect.
        per_trial: ``(n_trials, n_layers, n_heads)`` effect on each corrupted prompt.
        baseline: ``(n_trials,)`` the metric on each corrupted prompt, unpatched.
        method: how it was computed (``"naive"``, ...).
        metric: ``"prob"``, ``"logit"`` or ``"nll"``.
        seconds: wall time of the computation.
        info: free-form provenance (model, task, seed, ...).
    """

    aie: torch.Tensor
    per_trial: torch.Tensor
    baseline: torch.Tensor
    method: str
    metric: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.aie.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.aie.shape[1])

    def top_heads(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest AIE, as ``(layer, head, aie)``, largest first.

        Ties are broken by (layer, head), so the order is deterministic.
        """
        flat = self.aie.flatten().tolist()
        order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))[:k]
        return [(i // self.n_heads, i % self.n_heads, flat[i]) for i in order]

    def to_pandas(self):
        """One row per head: ``layer, head, aie, std, rank`` (rank 1 = largest AIE)."""
        import pandas as pd

        std = self.per_trial.std(0) if self.per_trial.shape[0] > 1 else torch.zeros_like(self.aie)
        rows = [{"layer": layer, "head": h, "aie": float(self.aie[layer, h]), "std": float(std[layer, h])}
                for layer in range(self.n_layers) for h in range(self.n_heads)]
        df = pd.DataFrame(rows)
        df["rank"] = df["aie"].rank(ascending=False, method="first").astype(int)
        return df.sort_values("rank").reset_index(drop=True)

    def plot(self, top_k: int = 10, title: str | None = None, heads: list[tuple[int, int]] | None = None):
        """Plotly heatmap (layers x heads); see :func:`ivkit.plotting.plot_head_importance`."""
        from .plotting import plot_head_importance

        return plot_head_importance(self, top_k=top_k, title=title, heads=heads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "aie": self.aie.tolist(),
            "method": self.method,
            "metric": self.metric,
            "seconds": self.seconds,
            "n_trials": int(self.per_trial.shape[0]),
            "baseline": self.baseline.tolist(),
            "per_trial": self.per_trial.tolist(),
            "top_heads": [[l, h, a] for l, h, a in self.top_heads(10)],
            **({"info": self.info} if self.info else {}),
        }

    def save(self, path: str | Path) -> None:
        """Write the JSON form (``indirect_effects.json``) atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IndirectEffects":
        try:
            aie = torch.tensor(d["aie"], dtype=torch.float32)
            per_trial = torch.tensor(d.get("per_trial") or [d["aie"]], dtype=torch.float32)
            return cls(aie, per_trial, torch.tensor(d.get("baseline", []), dtype=torch.float32),
                       d.get("method", "?"), d.get("metric", "prob"), float(d.get("seconds", 0.0)),
                       d.get("info", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"malformed indirect-effects data ({e}); re-run ivkit extract") from None

    @classmethod
    def load(cls, path: str | Path) -> "IndirectEffects":
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"no such file {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path} is not valid JSON ({e})") from None


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass
class MetricInputs:
    """One corrupted prompt prepared for a metric: token ids, the patch position, the targets."""

    ids: list[int]
    position: int          # index of the last prompt token within ``ids``
    first_token: int
    answer_ids: list[int]


def prepare_metric_inputs(prompts: EncodedPrompts, metric: str) -> list[MetricInputs]:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {METRICS}")
    out = []
    for ids, ans, first in zip(prompts.input_ids, prompts.answer_ids, prompts.first_token.tolist()):
        seq = list(ids) + ([] if metric in FIRST_TOKEN_METRICS else list(ans))
        out.append(MetricInputs(seq, len(ids) - 1, int(first), list(ans)))
    return out


def metric_from_logits(logits: torch.Tensor, item: MetricInputs, metric: str, offset: int = 0) -> torch.Tensor:
    """The metric of one row.

    Args:
        logits: ``(pos, vocab)`` for ``metric="nll"`` (all positions of the row, left padding
            ``offset``), or ``(vocab,)`` for ``"prob"``/``"logit"`` (the last position).
    """
    if metric == "prob":
        return torch.softmax(logits.float(), -1)[item.first_token]
    if metric == "logit":
        return logits.float()[item.first_token]
    start = offset + item.position
    n = len(item.answer_ids)
    logp = torch.log_softmax(logits[start:start + n].float(), -1)
    return logp.gather(-1, torch.tensor(item.answer_ids, device=logp.device)[:, None]).sum()


def run_metric(model: IVModel, items: list[MetricInputs], metric: str) -> torch.Tensor:
    """Metric of each item in one left-padded forward pass (hooks active outside apply)."""
    batch = model.make_batch([it.ids for it in items])
    keep = 1 if metric in FIRST_TOKEN_METRICS else 0
    logits = model.forward(batch, logits_to_keep=keep)
    width = batch.input_ids.shape[1]
    vals = []
    for r, it in enumerate(items):
        if metric in FIRST_TOKEN_METRICS:
            vals.append(metric_from_logits(logits[r, -1], it, metric))
        else:
            vals.append(metric_from_logits(logits[r], it, metric, offset=width - len(it.ids)))
    return torch.stack(vals)


def _patch_positions(items: list[MetricInputs]) -> torch.Tensor:
    width = max(len(it.ids) for it in items)
    return torch.tensor([width - len(it.ids) + it.position for it in items], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Indirect effects
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def _naive(model: IVModel, items: list[MetricInputs], mean_acts: torch.Tensor, metric: str,
           progress: bool, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    g = model.geometry
    effects = torch.zeros(len(items), g.n_layers, g.n_heads)
    baseline = torch.zeros(len(items))
    bar = progress_bar(total=len(items) * g.n_total_heads, desc="indirect effects (naive)", progress=progress)
    for i, it in enumerate(items):
        base = run_metric(model, [it], metric)[0]
        baseline[i] = base
        pos = _patch_positions([it])
        for layer in range(g.n_layers):
            for head in range(g.n_heads):
                mask = torch.zeros(g.n_heads, dtype=torch.bool)
                mask[head] = True
                with patch_head_outputs(model, {layer: (mask, mean_acts[layer])}, positions=pos):
                    effects[i, layer, head] = run_metric(model, [it], metric)[0] - base
                bar.update(1)
    bar.close()
    return effects, baseline


#: method name -> function(model, items, mean_acts, metric, progress, **options) -> (per_trial, baseline)
METHODS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "naive": _naive,
    "fast": fast_effects,
    "attribution": attribution_effects,
}


def check_mean_activations(model: IVModel, mean_acts: torch.Tensor) -> None:
    g = model.geometry
    want = (g.n_layers, g.n_heads, g.d_head)
    if tuple(mean_acts.shape) != want:
        raise IncompatibleVectorError(
            f"mean activations have shape {tuple(mean_acts.shape)} but {model.name} needs {want} "
            f"(n_layers, n_heads, d_head); they come from another model. Recompute them on this model"
        )


def _fast_blocker(model: IVModel) -> str:
    if model.backend.name == "transformer-lens":
        return "a TransformerBridge replaces the blocks with its own components"
    if getattr(model.backend, "remote", False) is not False:
        return "the model runs remotely"
    return "it only runs interventions through its own hooks"


def resolve_method(model: IVModel, method: str | None) -> str:
    """The indirect-effect method to use: ``method``, or the backend's default when ``None``
    (``"fast"`` where the backend can run it: torch, or nnsight locally; ``"naive"`` on the
    others). Raises a clear error for a method the backend cannot run."""
    from .errors import BackendError

    if method is None:
        method = "fast" if model.backend.supports_fast else "naive"
        if method != "fast":
            log.info("backend %s: indirect effects use method='naive' (the exact 'fast' engine needs the "
                     "Hugging Face modules here: backend='torch', or a local nnsight model)", model.backend.name)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if method == "fast" and not model.backend.supports_fast:
        raise BackendError(
            f"method='fast' re-runs the Hugging Face blocks with ivkit's own attention, so it needs them on "
            f"this machine and unwrapped; the {model.backend.name} backend here does not give that "
            f"({_fast_blocker(model)}). Use method='naive' (exact, slower) or 'attribution' with this backend, "
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
    mean_acts: torch.Tensor,
    *,
    method: str | None = None,
    metric: str = "prob",
    progress: bool = True,
    info: dict[str, Any] | None = None,
    **options: Any,
) -> IndirectEffects:
    """Average indirect effect of every head.

    Args:
        model: the model.
        corrupted: the corrupted prompts (``shuffled`` style), one trial each.
        mean_acts: ``(n_layers, n_heads, d_head)`` from :func:`mean_head_activations`.
        method: a key of :data:`METHODS`: ``"fast"`` (exact), ``"naive"`` (the per-head oracle),
            ``"attribution"`` (first-order estimate); ``None``: ``"fast"`` where the backend can run
            it (torch, local nnsight), ``"naive"`` elsewhere (see :func:`resolve_method`).
        metric: ``"prob"``, ``"logit"`` or ``"nll"`` (see the module docstring).
        options: passed to the method, e.g. ``max_memory_mb`` / ``prompts_per_pass`` for fast,
            ``batch_size`` for attribution; ``fallback=False`` makes an unsupported model an error
            for ``"fast"`` instead of a fallback to ``"naive"``.

    When ``"fast"`` cannot run on a model (:class:`~ivkit.blockcall.FastPathUnsupported`), the naive
    loop computes the same numbers instead, and the result records it: ``method`` is ``"naive"``
    and ``info["fast_unavailable"]`` holds the reason (both saved in ``indirect_effects.json``
    and ``iv.json``).

    Returns:
        :class:`IndirectEffects` with ``aie`` ``(n_layers, n_heads)``.
    """
    method = resolve_method(model, method)
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {METRICS}")
    if len(corrupted) == 0:
        raise InputError("indirect_effects needs at least one corrupted prompt")
    check_mean_activations(model, mean_acts)
    items = prepare_metric_inputs(corrupted, metric)
    fallback = options.pop("fallback", True)
    info = {"backend": model.backend.name, **dict(info or {})}
    t0 = time.perf_counter()
    try:
        per_trial, baseline = METHODS[method](model, items, mean_acts.float(), metric, progress, **options)
    except FastPathUnsupported as e:
        if method != "fast" or not fallback:
            raise
        log.warning("fast path unavailable for %s (%s); computing the naive per-head loop instead",
                    model.model_type, e)
        info["fast_unavailable"] = str(e)
        method = "naive"
        per_trial, baseline = _naive(model, items, mean_acts.float(), metric, progress)
    seconds = time.perf_counter() - t0
    log.info("indirect effects (%s, %d trials x %d heads) took %.1f s", method, len(items),
             model.geometry.n_total_heads, seconds)
    return IndirectEffects(per_trial.mean(0), per_trial, baseline, method, metric, seconds, info)


def rank_agreement(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Spearman rank correlation and top-``k`` overlap between two AIE matrices of one shape."""
    fa, fb = a.flatten().double().numpy(), b.flatten().double().numpy()
    ra, rb = np.argsort(np.argsort(-fa, kind="stable"), kind="stable"), np.argsort(np.argsort(-fb, kind="stable"), kind="stable")
    rho = float(np.corrcoef(ra, rb)[0, 1]) if len(fa) > 1 else 1.0
    top_a, top_b = set(np.argsort(-fa, kind="stable")[:k]), set(np.argsort(-fb, kind="stable")[:k])
    return {"spearman": rho, f"top{k}_overlap": len(top_a & top_b) / k}
