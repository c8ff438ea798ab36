"""What the anatomy analyses share: zero-shot prompts of a split, and scoring vectors with the
injection layer and scale chosen on the validation split and the accuracy reported on the test
split (`choose_and_test`, `VectorScores`).

Every accuracy is first-token top-1 with its 95% Wilson interval. The validation prompts are the
ones `ivkit.extract` sweeps on (stream 3 of the seed), the test prompts the zero-shot ones
`ivkit.evaluate_iv` scores (stream 7), so the numbers line up with those commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import IncompatibleVectorError, InputError
from ..core.prompts import DEFAULT_TEMPLATE, EncodedPrompts, PromptTemplate, encode_prompts, sample_prompts
from ..core.stats import wilson_interval
from ..core.tasks import Task, load_task
from ..evaluation import layer_sweep, score_prompts
from ..models.model import IVModel
from ..vectors import InstructionVector

#: the random stream of each split's zero-shot prompts (the extraction's sweep and the evaluation's)
STREAMS = {"valid": 3, "test": 7, "train": 11}


def zero_shot_prompts(model: IVModel, task: Task | str, split: str, *, n: int | None = None, seed: int = 0,
                      template: PromptTemplate = DEFAULT_TEMPLATE) -> EncodedPrompts:
    """Zero-shot prompts of the first ``n`` queries (a seeded order) of ``split`` (``train``,
    ``valid`` or ``test``) of the task's seeded split."""
    if split not in STREAMS:
        raise InputError(f"split must be one of {', '.join(STREAMS)}, got {split!r}")
    parts = load_task(task).split(seed)
    queries = {"train": parts.train, "valid": parts.valid, "test": parts.test}[split]
    return encode_prompts(model, sample_prompts(queries, style="zero_shot", n=n, seed=seed, template=template,
                                                stream=STREAMS[split]))


def accuracy_row(ranks: Tensor) -> dict[str, float | int | None]:
    """``{"top1", "lo", "hi", "n"}`` of answer ranks ``(n,)`` (rank 0 is right)."""
    n, right = len(ranks), int((ranks == 0).sum())
    ci = wilson_interval(right, n)
    return {"top1": right / n if n else None, "lo": ci[0] if ci else None, "hi": ci[1] if ci else None, "n": n}


def same_model(ivs: Sequence[InstructionVector]) -> dict[str, Any]:
    """The model entry of IVs' ``meta`` if they all come from one model; else an
    `IncompatibleVectorError` naming the two models."""
    if not ivs:
        raise InputError("no instruction vectors given")
    first = ivs[0].meta.get("model", {})
    for other in ivs[1:]:
        m = other.meta.get("model", {})
        for key in ("id", "config_hash", "d_model", "n_layers"):
            if key in first and key in m and first[key] != m[key]:
                raise IncompatibleVectorError(
                    f"the IVs come from different models ({key} {first[key]!r} vs {m[key]!r}): vector arithmetic "
                    f"needs IVs of one model; extract both on the same model")
        if other.vector.shape != ivs[0].vector.shape:
            raise IncompatibleVectorError(f"the IVs have widths {ivs[0].vector.shape[-1]} and "
                                          f"{other.vector.shape[-1]}: they come from different models")
    return dict(first)


@dataclass(frozen=True)
class VectorScores:
    """Zero-shot test accuracy of vectors injected into the residual stream.

    Attributes:
        task: the task name.
        rows: one dict per vector: ``name, layer, scale, chosen ("valid" when the layer and scale
            were chosen on the validation split, "given" when fixed), valid_top1, top1, lo, hi, n,
            norm``; the first row, ``no vector``, is the zero-shot accuracy without one.
    """

    task: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self, name: str) -> dict[str, Any]:
        for r in self.rows:
            if r["name"] == name:
                return r
        raise InputError(f"no row {name!r}; rows: {', '.join(r['name'] for r in self.rows)}")

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, title: str | None = None):
        """Test top-1 per vector with its 95% interval."""
        from ..core.plots import interval_bars

        return interval_bars(self.to_pandas(), x="name", y="top1", lo="lo", hi="hi", y_title="zero-shot top-1 (test)",
                             title=title or f"{self.task}: zero-shot test top-1 with each vector")

    def __repr__(self) -> str:
        cells = "; ".join(f"{r['name']} {r['top1']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in self.rows)
        n = self.rows[0]["n"] if self.rows else 0
        return f"VectorScores({self.task!r}, n={n}: {cells})"


def _as_vector(v: Tensor | InstructionVector) -> Tensor:
    return (v.vector if isinstance(v, InstructionVector) else v).detach().float().cpu()


def choose_and_test(
    model: IVModel,
    task: Task | str,
    vectors: Mapping[str, Float[Tensor, " d_model"] | InstructionVector],
    *,
    fixed: Mapping[str, tuple[int, float]] | None = None,
    layers: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
    seed: int = 0,
    n_valid: int | None = 100,
    n_test: int | None = None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    batch_size: int = 16,
    progress: bool = False,
) -> VectorScores:
    """Each vector added after one block at the last token of zero-shot test prompts.

    Args:
        vectors: name -> ``(d_model,)`` vector or IV (its ``vector`` is added: residual injection).
        fixed: name -> ``(layer, scale)`` for vectors injected where given (an IV's own layer and
            scale, or a baseline at the IV's); the others get the best cell of a
            `ivkit.layer_sweep` over ``layers`` (default all) x ``scales`` on ``n_valid``
            validation queries.
        n_test: test queries (default: the whole test split).
    """
    task = load_task(task)
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(vectors)
    if unknown:
        raise InputError(f"fixed names vectors that were not given: {sorted(unknown)}")
    test = zero_shot_prompts(model, task, "test", n=n_test, seed=seed, template=template)
    none = score_prompts(model, test, batch_size=batch_size)
    rows = [{"name": "no vector", "layer": None, "scale": None, "chosen": None, "valid_top1": None,
             **accuracy_row(none.ranks), "norm": 0.0}]
    valid = None
    for name, vec in vectors.items():
        v = _as_vector(vec)
        if not torch.isfinite(v).all():
            raise InputError(f"vector {name!r} has non-finite entries")
        if name in fixed:
            layer, scale = fixed[name]
            chosen, valid_top1 = "given", None
        else:
            valid = valid if valid is not None else zero_shot_prompts(model, task, "valid", n=n_valid, seed=seed,
                                                                      template=template)
            sw = layer_sweep(model, v, valid, layers=layers, scales=scales, batch_size=batch_size * 2,
                             progress=progress, split="valid")
            layer, scale, chosen, valid_top1 = sw.best_layer, sw.best_scale, "valid", sw.best_top1
        s = score_prompts(model, test, vector=v, layer=int(layer), scale=float(scale), batch_size=batch_size)
        rows.append({"name": name, "layer": int(layer), "scale": float(scale), "chosen": chosen,
                     "valid_top1": valid_top1, **accuracy_row(s.ranks), "norm": float(v.norm())})
    return VectorScores(task.name, rows)


def rescaled(v: Float[Tensor, " d_model"], norm: float) -> Float[Tensor, " d_model"]:
    """``v`` scaled to ``norm`` (an error for a zero or non-finite vector)."""
    n = float(v.norm())
    if not math.isfinite(n) or n == 0.0:
        raise InputError("cannot rescale a zero or non-finite vector")
    return v * (float(norm) / n)
