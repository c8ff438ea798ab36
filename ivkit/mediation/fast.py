"""``method="fast"``: exact per-head indirect effects through the continuation engine.

For a chunk of ``P`` corrupted prompts, one full pass keeps the prefix (`run_prefix`); then one
*row* per (prompt, layer, head), with that head patched to its mean at the last prompt token, enters
the network at its layer, plus one unpatched guard row per prompt from the bottom. All rows go up
together (`continue_rows`) and the metric reads each row's logits. Cost per (prompt, head): about ``S``
token-steps of the layers above the head's, instead of a full pass over ``T`` tokens; all heads and
several prompts share every matmul. The numbers equal the naive loop's (tested to 1e-5).
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.io import progress_bar
from ..engine.continuation import (
    RowGroup,
    check_guard,
    continue_rows,
    logits_rows_for,
    prompts_per_pass,
    read_rows,
    run_prefix,
)
from ..models.model import IVModel
from .metrics import AnswerMetric, MetricInputs


@torch.inference_mode()
def _fast_chunk(model: IVModel, items: Sequence[MetricInputs], mean_acts: Tensor, metric: AnswerMetric,
                guard_tol: float, logits_rows: int) -> tuple[Tensor, Tensor]:
    g = model.geometry
    H, P = g.n_heads, len(items)
    dev = model.device
    s = metric.positions(items)
    run = run_prefix(model, [it.ids for it in items], s)
    baseline = metric(run.logits, items)
    patch_pos = torch.tensor([s - (len(it.ids) - it.position) for it in items], device=dev)
    eye = torch.eye(H, dtype=torch.bool, device=dev)[None].expand(P, H, H)
    groups = [RowGroup(0, run.block_in[0][:, None])]  # the guard row: unpatched, from the bottom
    groups += [RowGroup(l, run.block_in[l][:, None].expand(P, H, s, g.d_model), eye, mean_acts[l], patch_pos)
               for l in range(g.n_layers)]
    rows = torch.cat(continue_rows(run, groups), dim=1)                   # (P, 1 + n_layers*H, s, d)
    item_of_row = [items[p] for p in range(P) for _ in range(rows.shape[1])]
    values = read_rows(model, rows.flatten(0, 1), lambda lg, sl: metric(lg, item_of_row[sl]),
                       logits_rows).view(P, -1)
    check_guard(values[:, 0], baseline.cpu(), guard_tol, "unpatched")
    effects = values[:, 1:].view(P, g.n_layers, H) - baseline.cpu()[:, None, None]
    return effects, baseline.cpu()


def fast_effects(model: IVModel, items: Sequence[MetricInputs], mean_acts: Float[Tensor, "layers heads d_head"],
                 metric: AnswerMetric, progress: bool, *, prompts_per_pass: int | None = None,
                 max_memory_mb: float = 1024.0, guard_tol: float = 1e-4, logits_rows: int | None = None
                 ) -> tuple[Float[Tensor, "trials layers heads"], Float[Tensor, " trials"]]:
    """Per-head effects and the unpatched metric, as `naive_effects`.

    Args:
        prompts_per_pass: corrupted prompts per continuation; default: as many as fit in
            ``max_memory_mb``.
        max_memory_mb: rough cap on the working memory of one pass (the model excluded).
        guard_tol: largest allowed difference between the unpatched continuation and the full
            pass, in metric units.
        logits_rows: rows unembedded at a time; default: as many as fit in half of
            ``max_memory_mb``.

    Raises:
        FastPathUnsupported: the model has something the engine cannot re-run (the dispatcher
            then falls back to the naive loop and records it).
    """
    g = model.geometry
    s = metric.positions(items)
    per_pass = prompts_per_pass or _per_pass(model, items, s, max_memory_mb)
    logits_rows = logits_rows or logits_rows_for(model, s, max_memory_mb)
    effects = torch.empty(len(items), g.n_layers, g.n_heads)
    baseline = torch.empty(len(items))
    order = sorted(range(len(items)), key=lambda i: len(items[i].ids))  # similar lengths: less padding
    bar = progress_bar(total=len(items), desc="indirect effects (fast)", progress=progress)
    for a in range(0, len(order), per_pass):
        idx = order[a:a + per_pass]
        effects[idx], baseline[idx] = _fast_chunk(model, [items[i] for i in idx], mean_acts, metric, guard_tol,
                                                  logits_rows)
        bar.update(len(idx))
    bar.close()
    return effects, baseline


def _per_pass(model: IVModel, items: Sequence[MetricInputs], s: int, max_memory_mb: float) -> int:
    return prompts_per_pass(model, max(len(it.ids) for it in items), s, max_memory_mb)
