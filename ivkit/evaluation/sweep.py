"""Choosing where to inject: the layer sweep.

The IV is added after each block in turn (times each scale), on zero-shot prompts of the
*validation* split; the best cell (top-1 accuracy, then mean probability of the answer token) is
the injection layer and scale. With ``injections=("residual", "heads")`` the heads injection is a
candidate too. The test split is never used to choose anything. The sweep runs through the
continuation engine (`ivkit.engine.continuation`), one row per (layer, scale) cell.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError
from ..core.io import progress_bar
from ..core.options import Injection, SweepMethod, check_choice
from ..core.plots import sweep_lines
from ..core.prompts import EncodedPrompts
from ..core.readout import answer_prob, answer_rank_prob
from ..engine.blockcall import FastPathUnsupported
from ..engine.continuation import (
    RowGroup,
    check_guard,
    continue_rows,
    fast_unavailable,
    logits_rows_for,
    prompts_per_pass,
    read_rows,
    run_prefix,
)
from ..models.model import IVModel, length_batches
from ..vectors import INJECTIONS, InstructionVector
from .scoring import score_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSweep:
    """Accuracy of the prompts with the vector added after each layer, at each scale (and, when
    asked, with the IV's heads patched to ``scale *`` their means: ``injection="heads"``).

    Attributes:
        layers: the layers tried (the vector is added to that block's output); empty when only
            the heads injection was swept.
        scales: the multipliers tried.
        top1: ``[scale][layer]`` top-1 accuracy.
        mean_prob: ``[scale][layer]`` mean probability of the answer token.
        baseline_top1, baseline_prob: the same with no vector.
        n: number of prompts.
        split: which split the prompts came from (``"valid"`` when choosing).
        method: ``"fast"`` (last-position continuation) or ``"naive"`` (a full pass per cell).
        heads_top1, heads_prob: ``[scale]`` top-1 and mean probability with ``injection="heads"``,
            or None when it was not tried.
    """

    layers: list[int]
    scales: list[float]
    top1: list[list[float]]
    mean_prob: list[list[float]]
    baseline_top1: float
    baseline_prob: float
    n: int
    split: str = "valid"
    method: str = "fast"
    seconds: float = 0.0
    heads_top1: list[float] | None = None
    heads_prob: list[float] | None = None
    fast_unavailable: str | None = None

    def cells(self) -> list[dict[str, Any]]:
        """Every cell tried: ``{"injection", "layer" (None for heads), "scale", "top1", "mean_prob"}``."""
        out = [{"injection": "residual", "layer": l, "scale": sc, "top1": self.top1[si][li],
                "mean_prob": self.mean_prob[si][li]}
               for si, sc in enumerate(self.scales) for li, l in enumerate(self.layers)]
        if self.heads_top1 is not None:
            out += [{"injection": "heads", "layer": None, "scale": sc, "top1": self.heads_top1[si],
                     "mean_prob": self.heads_prob[si]} for si, sc in enumerate(self.scales)]
        return out

    def best(self) -> dict[str, Any]:
        """The chosen cell: highest top-1 accuracy; ties go to the higher mean probability, then
        residual injection (the reference recipe) over heads, then the smaller scale, then the
        lower layer."""
        cells = self.cells()
        if not cells:
            raise InputError("the sweep tried no cell")
        return max(cells, key=lambda c: (c["top1"], c["mean_prob"], c["injection"] == "residual", -c["scale"],
                                         -(c["layer"] or 0)))

    @property
    def best_injection(self) -> str:
        return self.best()["injection"]

    @property
    def best_layer(self) -> int | None:
        """The chosen cell's layer (see `best`); None when the heads injection won."""
        return self.best()["layer"]

    @property
    def best_scale(self) -> float:
        return self.best()["scale"]

    @property
    def best_top1(self) -> float:
        return self.best()["top1"]

    @property
    def best_prob(self) -> float:
        return self.best()["mean_prob"]

    def to_pandas(self):
        """One row per cell: ``injection, scale, layer, top1, mean_prob`` (layer None for heads)."""
        import pandas as pd

        return pd.DataFrame([{k: c[k] for k in ("injection", "scale", "layer", "top1", "mean_prob")}
                             for c in self.cells()])

    def to_dict(self) -> dict[str, Any]:
        out = {"layers": self.layers, "scales": self.scales, "top1": self.top1, "mean_prob": self.mean_prob,
               "baseline_top1": self.baseline_top1, "baseline_prob": self.baseline_prob, "n": self.n,
               "split": self.split, "method": self.method, "best_layer": self.best_layer,
               "best_scale": self.best_scale, "best_top1": self.best_top1, "seconds": self.seconds}
        if self.heads_top1 is not None:
            out.update(heads_top1=self.heads_top1, heads_prob=self.heads_prob, best_injection=self.best_injection)
        if self.fast_unavailable:
            out["fast_unavailable"] = self.fast_unavailable
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSweep":
        """Inverse of `to_dict`."""
        return cls(list(d["layers"]), list(d["scales"]), d["top1"], d["mean_prob"], d["baseline_top1"],
                   d["baseline_prob"], int(d["n"]), d.get("split", "valid"), d.get("method", "fast"),
                   float(d.get("seconds", 0.0)), d.get("heads_top1"), d.get("heads_prob"), d.get("fast_unavailable"))

    def plot(self, title: str | None = None):
        """Top-1 accuracy against the injection layer, one line per scale; the heads injection as a
        column of its own; the chosen cell starred."""
        best = self.best()
        where = "heads injection" if best["layer"] is None else f"best layer {best['layer']}"
        return sweep_lines(self.layers, self.scales, self.top1, self.mean_prob, baseline_top1=self.baseline_top1,
                           best=best, heads_top1=self.heads_top1, heads_prob=self.heads_prob,
                           title=title or f"Injection sweep ({self.split} split, n={self.n}): {where}, "
                                          f"scale {best['scale']:g}")

    def __repr__(self) -> str:
        b = self.best()
        where = "heads" if b["layer"] is None else f"layer {b['layer']}"
        return (f"LayerSweep({len(self.layers)} layers x {len(self.scales)} scales, n={self.n} {self.split}, "
                f"best: {where} scale {b['scale']:g} top-1 {b['top1']:.3f}, no vector {self.baseline_top1:.3f})")


def _sweep_naive(model, vector, prompts, layers, scales, batch_size, progress):
    top1 = [[0.0] * len(layers) for _ in scales]
    mprob = [[0.0] * len(layers) for _ in scales]
    cells = [(si, li) for si in range(len(scales)) for li in range(len(layers))]
    for si, li in progress_bar(cells, desc="layer sweep", progress=progress):
        sc = score_prompts(model, prompts, vector=vector, layer=layers[li], scale=scales[si], batch_size=batch_size)
        top1[si][li], mprob[si][li] = sc.accuracy(1), sc.mean_prob
    return top1, mprob


@torch.inference_mode()
def _sweep_fast(model: IVModel, vector: Tensor, prompts: EncodedPrompts, layers: list[int], scales: list[float],
                progress: bool, max_memory_mb: float, guard_tol: float = 1e-4):
    """All (layer, scale) cells by continuation: adding the vector at the last position changes
    only that position, so each cell re-runs one position from the layer above up."""
    g = model.geometry
    n_cells = len(layers) * len(scales)
    per_pass = max(1, prompts_per_pass(model, max(len(x) for x in prompts.input_ids), 1, max_memory_mb)
                   * (g.n_total_heads + 1) // (n_cells + 1))
    hits = torch.zeros(len(scales), len(layers))
    psum = torch.zeros(len(scales), len(layers))
    base_hits = base_p = 0.0
    sc = torch.tensor(scales, dtype=model.dtype, device=model.device)
    v = vector.to(model.device, model.dtype)
    chunk = logits_rows_for(model, 1, max_memory_mb)
    batches = length_batches([len(x) for x in prompts.input_ids], per_pass)
    for idx in progress_bar(batches, desc="layer sweep", progress=progress):
        run = run_prefix(model, [prompts.input_ids[i] for i in idx], 1)
        P = len(idx)
        target = prompts.first_token[idx].to(model.device)
        groups = [RowGroup(0, run.block_in[0][:, None])]                      # the guard row
        groups += [RowGroup(l + 1, run.block_in[l + 1][:, None] + sc[None, :, None, None] * v) for l in layers]
        rows = torch.cat(continue_rows(run, groups), dim=1)                   # (P, 1 + n_cells, 1, d)
        tgt_rows = target.repeat_interleave(rows.shape[1])

        def read(lg: Tensor, sl: slice) -> Tensor:
            rank, prob = answer_rank_prob(lg[:, -1], tgt_rows[sl])
            return torch.stack([rank.float(), prob], dim=-1)
        out = read_rows(model, rows.flatten(0, 1), read, chunk).view(P, -1, 2)   # rank, prob per row
        check_guard(out[:, 0, 1], answer_prob(run.logits[:, -1], target).cpu(), guard_tol, "unsteered")
        base_hits += float((out[:, 0, 0] == 0).sum())
        base_p += float(out[:, 0, 1].sum())
        cells = out[:, 1:].view(P, len(layers), len(scales), 2)
        hits += (cells[..., 0] == 0).float().sum(0).T
        psum += cells[..., 1].sum(0).T
    n = len(prompts)
    return (hits / n).tolist(), (psum / n).tolist(), base_hits / n, base_p / n


def _sweep_heads(model: IVModel, iv: InstructionVector, prompts: EncodedPrompts, scales: list[float],
                 batch_size: int, progress: bool) -> tuple[list[float], list[float]]:
    """Top-1 and mean probability with the IV's heads set to ``scale`` x their means, per scale."""
    top1, prob = [], []
    for sc in progress_bar(scales, desc="heads sweep", progress=progress):
        s = score_prompts(model, prompts, vector=iv, scale=sc, injection="heads", batch_size=batch_size)
        top1.append(s.accuracy(1))
        prob.append(s.mean_prob)
    return top1, prob


def layer_sweep(
    model: IVModel,
    vector: Float[Tensor, " d_model"] | InstructionVector,
    prompts: EncodedPrompts,
    *,
    layers: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    scale: float | None = None,
    method: SweepMethod | None = None,
    batch_size: int = 32,
    max_memory_mb: float = 1024.0,
    progress: bool = True,
    split: str = "valid",
    injections: Sequence[Injection] = ("residual",),
) -> LayerSweep:
    """Score ``prompts`` with the vector added after each layer in ``layers`` (default: all),
    at each multiplier in ``scales``; with ``"heads"`` in ``injections`` (``vector`` must then be
    an IV), also with the IV's heads patched to ``scale *`` their means, one cell per scale.

    ``method="fast"`` re-runs only the last position from the layer above up through the
    continuation engine (exact; where the model does not allow it, it falls back to ``"naive"``,
    a full pass per cell, and the result records why). The default, ``None``, is ``"fast"`` where
    the backend can run it (torch, local nnsight) and ``"naive"`` (through the backend) on the
    others. ``scale=x`` is shorthand for ``scales=(x,)``.
    """
    t0 = time.perf_counter()
    injections = [check_choice("injections", i, Injection) for i in injections]
    if not injections:
        raise InputError(f"injections must be a non-empty subset of {', '.join(INJECTIONS)}")
    if method is not None:
        check_choice("method", method, SweepMethod)
    iv = vector if isinstance(vector, InstructionVector) else None
    if iv is not None:
        iv.check_compatible(model)
        vector = iv.vector
    elif "heads" in injections:
        raise InputError("the heads injection needs an InstructionVector (its heads and their means), "
                         "not a plain vector")
    scales = [float(x) for x in ((scale,) if scale is not None else scales)]
    heads_top1, heads_prob = (_sweep_heads(model, iv, prompts, scales, batch_size, progress)
                              if "heads" in injections else (None, None))
    if "residual" not in injections:
        base = score_prompts(model, prompts, batch_size=batch_size)
        return LayerSweep([], scales, [[] for _ in scales], [[] for _ in scales], base.accuracy(1), base.mean_prob,
                          len(prompts), split, "naive", time.perf_counter() - t0, heads_top1, heads_prob)
    layers = list(range(model.geometry.n_layers)) if layers is None else list(layers)
    blocker = fast_unavailable(model)
    if method == "fast" and blocker:
        log.info("the fast layer sweep needs the Hugging Face modules (%s); sweeping through %s with a full "
                 "pass per cell", blocker, model.backend.name)
    used, note = ("naive" if blocker or method == "naive" else "fast"), None
    if used == "fast":
        try:
            top1, mprob, b1, bp = _sweep_fast(model, vector, prompts, layers, scales, progress, max_memory_mb)
        except FastPathUnsupported as e:
            log.warning("fast layer sweep unavailable for %s (%s); running a full pass per cell", model.model_type, e)
            used, note = "naive", str(e)
    if used == "naive":
        base = score_prompts(model, prompts, batch_size=batch_size)
        b1, bp = base.accuracy(1), base.mean_prob
        top1, mprob = _sweep_naive(model, vector, prompts, layers, scales, batch_size, progress)
    return LayerSweep(layers, scales, top1, mprob, b1, bp, len(prompts), split, used, time.perf_counter() - t0,
                      heads_top1, heads_prob, note)
