"""Baselines for an instruction vector: what a vector *not* built from heads does at the same place.

* **task vector** (in the style of Hendel et al.): the mean last-token residual stream (the output
  of block ``L``) of clean few-shot prompts of training queries;
* **mean difference**: the same mean minus the mean over zero-shot prompts of the same queries:
  what the demonstrations add to the residual stream at that layer, all heads and MLPs together.

`baseline_vectors` computes both at every layer in one pass per prompt set.
`iv_with_baselines` scores them beside the IV on the zero-shot test split: each rescaled to
the IV's norm and injected at the IV's layer and scale ("matched": the same budget, so the
difference is what the heads' direction adds), and again with the scale chosen on the validation
split at that layer (in case the norm the IV needs is not the norm a baseline needs).
`baselines_at_best_layer` frees the layer too: each layer's own baseline vector, at the IV's
norm, the layer and scale chosen on the validation split (is a baseline weak everywhere, or only
at the IV's layer?). Hendel et
al. *replace* the hidden state with the task vector; here every vector is *added*, as the IV is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..activations import residual_stream
from ..core.errors import InputError
from ..core.prompts import DEFAULT_TEMPLATE, PromptTemplate, encode_prompts, sample_prompts
from ..core.tasks import Task, load_task
from ..evaluation import score_prompts
from ..models.model import IVModel
from ..vectors import InstructionVector
from .anatomy_common import VectorScores, accuracy_row, choose_and_test, rescaled, zero_shot_prompts

BASELINES = ("task vector", "mean difference")


@dataclass(frozen=True, eq=False)
class BaselineVectors:
    """Per-layer baseline vectors (`baseline_vectors`).

    Attributes:
        task_vector: ``(n_layers, d_model)`` mean last-token block output on clean few-shot prompts.
        mean_difference: ``(n_layers, d_model)`` that minus the same mean on zero-shot prompts.
        n_few_shot, n_zero_shot: prompts averaged.
    """

    task: str
    task_vector: Float[Tensor, "layers d_model"]
    mean_difference: Float[Tensor, "layers d_model"]
    n_few_shot: int
    n_zero_shot: int
    info: Mapping[str, Any]

    def at(self, layer: int, *, norm: float | None = None) -> dict[str, Tensor]:
        """Both vectors at ``layer``, rescaled to ``norm`` when given."""
        if not 0 <= layer < self.task_vector.shape[0]:
            raise InputError(f"layer {layer} is out of range 0..{self.task_vector.shape[0] - 1}")
        out = {"task vector": self.task_vector[layer], "mean difference": self.mean_difference[layer]}
        return {k: rescaled(v, norm) if norm is not None else v.clone() for k, v in out.items()}

    def cosines(self, iv: InstructionVector) -> list[float]:
        """Per layer, the cosine of the mean-difference vector with the IV."""
        return torch.nn.functional.cosine_similarity(self.mean_difference.double(), iv.vector.double()[None],
                                                     dim=-1).tolist()

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame({"layer": range(self.task_vector.shape[0]),
                             "task_vector_norm": self.task_vector.norm(dim=-1).tolist(),
                             "mean_difference_norm": self.mean_difference.norm(dim=-1).tolist()})

    def plot(self, title: str | None = None):
        from ..core.plots import profile_lines

        df = self.to_pandas().melt(id_vars="layer", var_name="vector", value_name="norm")
        return profile_lines(df, x="layer", y="norm", line="vector", x_title="layer", y_title="norm",
                             title=title or f"{self.task}: baseline vector norms per layer")

    def __repr__(self) -> str:
        return (f"BaselineVectors({self.task!r}, {self.task_vector.shape[0]} layers, {self.n_few_shot} few-shot and "
                f"{self.n_zero_shot} zero-shot prompts)")


def baseline_vectors(model: IVModel, task: Task | str, *, n: int = 50, shots: int = 10, seed: int = 0,
                     template: PromptTemplate = DEFAULT_TEMPLATE, batch_size: int = 16,
                     progress: bool = False, stream: int = 41) -> BaselineVectors:
    """The task vector and the mean-difference vector at every layer, from ``n`` training queries
    (a seeded draw, ``stream`` apart from the extraction's), as clean ``shots``-shot prompts and as
    zero-shot prompts."""
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    task = load_task(task)
    split = task.split(seed)
    common = dict(n=n, seed=seed, template=template, stream=stream)
    few = encode_prompts(model, sample_prompts(split.train, style="few_shot", demo_pool=split.train, shots=shots,
                                               **common))
    zero = encode_prompts(model, sample_prompts(split.train, style="zero_shot", **common))
    few_mean = residual_stream(model, few, batch_size=batch_size, progress=progress).mean(0)
    zero_mean = residual_stream(model, zero, batch_size=batch_size, progress=progress).mean(0)
    return BaselineVectors(task.name, few_mean, few_mean - zero_mean, len(few), len(zero),
                           {"shots": shots, "seed": seed, "template": template.to_dict(), "split": "train"})


def iv_with_baselines(model: IVModel, task: Task | str, iv: InstructionVector, baselines: BaselineVectors, *,
                      scales: Sequence[float] = (1.0, 2.0, 3.0, 4.0), seed: int = 0, n_valid: int | None = 100,
                      n_test: int | None = None, template: PromptTemplate = DEFAULT_TEMPLATE, batch_size: int = 16
                      ) -> VectorScores:
    """Zero-shot test top-1 of the IV (its own layer and scale) and of each baseline, rescaled to the
    IV's norm, at the IV's layer: at the IV's scale ("matched") and at the scale chosen on the
    validation split ("scale chosen")."""
    iv.check_compatible(model)
    if iv.layer is None:
        raise InputError("the IV has no injection layer (heads injection or not swept): give it one with "
                         "iv.replace(layer=...) to compare it with residual-stream baselines")
    at = baselines.at(iv.layer, norm=iv.norm)
    vectors: dict[str, Any] = {"IV": iv}
    fixed = {"IV": (iv.layer, iv.scale)}
    for name, v in at.items():
        vectors[f"{name} (matched)"] = v
        fixed[f"{name} (matched)"] = (iv.layer, iv.scale)
    matched = choose_and_test(model, task, vectors, fixed=fixed, seed=seed, n_test=n_test, template=template,
                              batch_size=batch_size)
    chosen = choose_and_test(model, task, {f"{k} (scale chosen)": v for k, v in at.items()}, layers=[iv.layer],
                             scales=scales, seed=seed, n_valid=n_valid, n_test=n_test, template=template,
                             batch_size=batch_size)
    return VectorScores(matched.task, matched.rows + chosen.rows[1:])


def _rows(model: IVModel, vectors: Tensor, run, layers: list[int], scales: Tensor) -> list:
    from ..engine.continuation import RowGroup

    groups = [RowGroup(0, run.block_in[0][:, None])]                     # the guard row
    groups += [RowGroup(l + 1, run.block_in[l + 1][:, None] + scales[None, :, None, None] * vectors[l]) for l in layers]
    return groups


def per_layer_sweep(model: IVModel, vectors: Float[Tensor, "layers d_model"], prompts, *, layers: Sequence[int],
                    scales: Sequence[float], max_memory_mb: float = 1024.0) -> tuple[Tensor, Tensor]:
    """Top-1 accuracy and mean answer probability ``(n_scales, n_layers)`` with ``vectors[l]`` (each
    layer its own vector) times each scale added after block ``l`` at the last token, for ``l`` in
    ``layers``: one full pass per chunk of prompts, then each cell re-run from the layer above by the
    continuation engine (exact, checked against the full pass by a guard row). Where the engine
    cannot run (another backend or attention implementation), a full scoring pass per cell."""
    from ..engine.blockcall import FastPathUnsupported
    from ..engine.continuation import fast_unavailable

    if fast_unavailable(model) is None:
        try:
            return _per_layer_fast(model, vectors, prompts, list(layers), scales, max_memory_mb)
        except FastPathUnsupported:
            pass
    top1, prob = torch.zeros(len(scales), len(layers)), torch.zeros(len(scales), len(layers))
    for si, sc in enumerate(scales):
        for li, l in enumerate(layers):
            s = score_prompts(model, prompts, vector=vectors[l], layer=l, scale=float(sc))
            top1[si, li], prob[si, li] = s.accuracy(1), s.mean_prob
    return top1, prob


@torch.inference_mode()
def _per_layer_fast(model: IVModel, vectors: Tensor, prompts, layers: list[int], scales: Sequence[float],
                    max_memory_mb: float) -> tuple[Tensor, Tensor]:
    from ..core.readout import answer_prob, answer_rank_prob
    from ..engine.continuation import check_guard, continue_rows, logits_rows_for, prompts_per_pass, read_rows, run_prefix
    from ..models.model import length_batches

    g = model.geometry
    sc = torch.tensor(list(scales), dtype=model.dtype, device=model.device)
    vec = vectors.to(model.device, model.dtype)
    n_cells = len(layers) * len(scales)
    per_pass = max(1, prompts_per_pass(model, max(len(x) for x in prompts.input_ids), 1, max_memory_mb)
                   * (g.n_total_heads + 1) // (n_cells + 1))
    hits, psum = torch.zeros(len(scales), len(layers)), torch.zeros(len(scales), len(layers))
    chunk = logits_rows_for(model, 1, max_memory_mb)
    for idx in length_batches([len(x) for x in prompts.input_ids], per_pass):
        run = run_prefix(model, [prompts.input_ids[i] for i in idx], 1)
        target = prompts.first_token[idx].to(model.device)
        rows = torch.cat(continue_rows(run, _rows(model, vec, run, layers, sc)), dim=1)
        tgt = target.repeat_interleave(rows.shape[1])

        def read(lg: Tensor, sl: slice) -> Tensor:
            rank, prob = answer_rank_prob(lg[:, -1], tgt[sl])
            return torch.stack([rank.float(), prob], dim=-1)
        out = read_rows(model, rows.flatten(0, 1), read, chunk).view(len(idx), -1, 2)
        check_guard(out[:, 0, 1], answer_prob(run.logits[:, -1], target).cpu(), 1e-4, "unsteered")
        cells = out[:, 1:].view(len(idx), len(layers), len(scales), 2)
        hits += (cells[..., 0] == 0).float().sum(0).T
        psum += cells[..., 1].sum(0).T
    return hits / len(prompts), psum / len(prompts)


def baselines_at_best_layer(model: IVModel, task: Task | str, iv: InstructionVector, baselines: BaselineVectors, *,
                            layers: Sequence[int] | None = None, scales: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
                            seed: int = 0, n_valid: int | None = 100, n_test: int | None = None,
                            template: PromptTemplate = DEFAULT_TEMPLATE, batch_size: int = 16) -> VectorScores:
    """Each baseline with its layer free: at every layer ``L`` in ``layers`` (default all), the
    baseline computed at ``L`` and rescaled to the IV's norm is added after ``L`` at each scale on
    the validation split (`per_layer_sweep`); the best cell (top-1, then mean answer
    probability, then the smaller scale, then the lower layer) is scored on the test split. Rows
    ``<name> (layer and scale chosen)``, after ``no vector``."""
    task = load_task(task)
    n_layers = baselines.task_vector.shape[0]
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    scales = [float(x) for x in scales]
    valid = zero_shot_prompts(model, task, "valid", n=n_valid, seed=seed, template=template)
    test = zero_shot_prompts(model, task, "test", n=n_test, seed=seed, template=template)
    rows = [{"name": "no vector", "layer": None, "scale": None, "chosen": None, "valid_top1": None,
             **accuracy_row(score_prompts(model, test, batch_size=batch_size).ranks), "norm": 0.0}]
    for name in BASELINES:
        vectors = torch.stack([baselines.at(l, norm=iv.norm)[name] for l in range(n_layers)])
        top1, prob = per_layer_sweep(model, vectors, valid, layers=layers, scales=scales)
        cells = [(float(top1[si, li]), float(prob[si, li]), -scales[si], -layers[li])
                 for si in range(len(scales)) for li in range(len(layers))]
        best = max(cells)
        layer, scale = -best[3], -best[2]
        s = score_prompts(model, test, vector=vectors[layer], layer=layer, scale=scale, batch_size=batch_size)
        rows.append({"name": f"{name} (layer and scale chosen)", "layer": layer, "scale": scale, "chosen": "valid",
                     "valid_top1": best[0], **accuracy_row(s.ranks), "norm": float(vectors[layer].norm())})
    return VectorScores(task.name, rows)
