"""Arithmetic on instruction vectors of one model: sums, differences, multiples (`compose`),
and how a composed vector does on a task against that task's own IV (`compare_composition`).

A composed IV is an ordinary `InstructionVector`: ``vector = sum_i c_i v_i``; its
heads are the union of the terms' heads, a head shared by several terms carrying the same
combination of their means and contributions (so its contributions still add up to ``vector``);
it has no AIE (NaN) and no mean activations. ``meta["composition"]`` records every term (its
coefficient, task, norm, layer, scale and source directory when known); it saves and loads like
any IV. Its injection is residual, with no layer until one is chosen (``layer=``, or
`compare_composition`, which chooses it on the validation split).

IVs of different models (another model id, config or width) are refused: their directions live
in different residual streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..core.errors import InputError
from ..core.prompts import DEFAULT_TEMPLATE, PromptTemplate
from ..core.tasks import Task, load_task
from ..models.model import IVModel
from ..vectors import InstructionVector
from .anatomy_common import VectorScores, choose_and_test, same_model


def _formula(terms: Sequence[tuple[float, str]]) -> str:
    out = ""
    for i, (c, name) in enumerate(terms):
        sign = "-" if c < 0 else ("+" if i else "")
        mag = abs(c)
        out += f" {sign} " if i else sign
        out += (name if mag == 1 else f"{mag:g}*{name}")
    return out.strip()


def compose(terms: Sequence[tuple[float, InstructionVector]], *, name: str | None = None, layer: int | None = None,
            scale: float = 1.0) -> InstructionVector:
    """``sum_i c_i * iv_i`` for ``terms = [(c_1, iv_1), ...]``, as an IV (see the module docstring).

    Args:
        name: the composed vector's task name in ``meta`` (default: the formula, e.g.
            ``"capitalize + lowercase_first_letter"``).
        layer, scale: its injection layer (None until chosen) and multiplier.

    Raises:
        IncompatibleVectorError: the IVs come from different models.
        InputError: no terms, or a non-finite coefficient.
    """
    terms = [(float(c), iv) for c, iv in terms]
    if not terms:
        raise InputError("compose needs at least one (coefficient, IV) term")
    for c, iv in terms:
        if not isinstance(iv, InstructionVector):
            raise InputError(f"compose takes (coefficient, InstructionVector) pairs, got {type(iv).__name__}")
        if not torch.isfinite(torch.tensor(c)):
            raise InputError(f"coefficients must be finite, got {c}")
    model_meta = same_model([iv for _, iv in terms])
    merged: dict[tuple[int, int], list[torch.Tensor]] = {}
    for c, iv in terms:
        for hd, mean, contrib in zip(iv.heads, iv.head_means, iv.head_contributions):
            hd = (int(hd[0]), int(hd[1]))
            if hd in merged:
                merged[hd][0] = merged[hd][0] + c * mean.float()
                merged[hd][1] = merged[hd][1] + c * contrib.float()
            else:
                merged[hd] = [c * mean.float(), c * contrib.float()]
    vector = sum(c * iv.vector.float() for c, iv in terms)
    heads = list(merged)
    d_head = terms[0][1].head_means.shape[-1] if terms[0][1].head_means.dim() == 2 else 0
    means = torch.stack([m for m, _ in merged.values()]) if heads else torch.zeros(0, d_head)
    contribs = torch.stack([x for _, x in merged.values()]) if heads else torch.zeros(0, vector.shape[-1])
    names = [(c, str(iv.meta.get("task", f"iv{i}"))) for i, (c, iv) in enumerate(terms)]
    record = {"formula": _formula(names), "terms": [
        {"coefficient": c, "task": iv.meta.get("task"), "norm": iv.norm, "layer": iv.layer, "scale": iv.scale,
         "injection": iv.injection, "k": iv.k, "source": iv.meta.get("source")} for c, iv in terms]}
    first = terms[0][1].meta
    meta: dict[str, Any] = {"model": model_meta, "task": name or record["formula"], "composition": record}
    for key in ("post_norm", "backend", "ivkit_version", "template", "seed", "shots"):
        if key in first:
            meta[key] = first[key]
    return InstructionVector(vector, heads, [float("nan")] * len(heads), means, contribs, None, layer, meta,
                             float(scale), "residual")


def iv_sum(a: InstructionVector, b: InstructionVector, **options: Any) -> InstructionVector:
    """``a + b`` (see `compose`)."""
    return compose([(1.0, a), (1.0, b)], **options)


def iv_difference(a: InstructionVector, b: InstructionVector, **options: Any) -> InstructionVector:
    """``a - b`` (see `compose`)."""
    return compose([(1.0, a), (-1.0, b)], **options)


def iv_scaled(a: InstructionVector, c: float, **options: Any) -> InstructionVector:
    """``c * a`` (see `compose`)."""
    return compose([(c, a)], **options)


@dataclass(frozen=True)
class CompositionResult:
    """A composed IV against the target task's own IV (`compare_composition`).

    Attributes:
        task: the target task.
        formula: the composition.
        scores: zero-shot test accuracy of each vector (and of the terms alone), each injected at
            the layer and scale chosen for it on the validation split.
        cosines: the composed vector's cosine with the task's own IV and with each term.
    """

    task: str
    formula: str
    scores: VectorScores
    cosines: dict[str, float]

    def to_pandas(self):
        df = self.scores.to_pandas()
        df["cosine_with_composed"] = [self.cosines.get(n) for n in df["name"]]
        return df

    def plot(self, title: str | None = None):
        return self.scores.plot(title or f"{self.task}: composed ({self.formula}) against its own IV")

    def __repr__(self) -> str:
        cells = "; ".join(f"{r['name']} {r['top1']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in self.scores.rows)
        own = self.cosines.get("own IV")
        cos = f", cosine with own IV {own:.3f}" if own is not None else ""
        return f"CompositionResult({self.task!r} = {self.formula}{cos}: {cells})"


def compare_composition(model: IVModel, task: Task | str, composed: InstructionVector,
                        own: InstructionVector | None = None, *, parts: Sequence[InstructionVector] = (),
                        scales: Sequence[float] = (1.0, 2.0, 3.0, 4.0), seed: int = 0, n_valid: int | None = 100,
                        n_test: int | None = None, template: PromptTemplate = DEFAULT_TEMPLATE, batch_size: int = 16,
                        progress: bool = False) -> CompositionResult:
    """Zero-shot test top-1 on ``task`` of the composed vector, the task's own IV and each of
    ``parts`` alone, each injected after the layer and at the scale its own validation sweep
    chose (so no vector is handicapped by another's choice), beside no vector."""
    task = load_task(task)
    vectors: dict[str, Any] = {"composed": composed}
    if own is not None:
        vectors["own IV"] = own
    for i, p in enumerate(parts):
        vectors[f"{p.meta.get('task', f'part {i}')} alone"] = p
    same_model([v for v in vectors.values()])
    scores = choose_and_test(model, task, vectors, scales=scales, seed=seed, n_valid=n_valid, n_test=n_test,
                             template=template, batch_size=batch_size, progress=progress)
    cosines = {n: composed.cosine(v) for n, v in vectors.items()}
    formula = composed.meta.get("composition", {}).get("formula", str(composed.meta.get("task")))
    return CompositionResult(task.name, formula, scores, cosines)
