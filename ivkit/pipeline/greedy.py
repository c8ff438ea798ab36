"""Choosing an IV's heads together, greedily, for what the IV is for: zero-shot accuracy."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError
from ..core.io import progress_bar
from ..core.prompts import EncodedPrompts
from ..evaluation import score_prompts
from ..models.model import IVModel
from ..vectors import InstructionVector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GreedyPath:
    """The heads `greedy_heads` added, in order, with the score after each addition.

    Attributes:
        heads: ``[(layer, head), ...]`` in the order they were added.
        top1: selection-set top-1 accuracy after each addition, ``len(heads)`` values.
        prob: selection-set mean probability of the answer's first token after each addition.
        pool: the candidate heads.
        scale: the heads injection's scale the path was chosen at.
        n: selection queries.
        seconds: wall time.
    """

    heads: list[tuple[int, int]]
    top1: list[float]
    prob: list[float]
    pool: list[tuple[int, int]]
    scale: float
    n: int
    seconds: float = 0.0
    #: the search stopped (no head improved the score, or the cap was reached)
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"heads": [list(h) for h in self.heads], "top1": self.top1, "prob": self.prob,
                "pool": [list(h) for h in self.pool], "scale": self.scale, "n": self.n,
                "seconds": round(self.seconds, 3)}

    def state(self) -> dict[str, Any]:
        """`to_dict` with the unrounded seconds and ``done``: what a resumed search needs."""
        return {**self.to_dict(), "seconds": self.seconds, "done": self.done}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GreedyPath":
        return cls([tuple(h) for h in d["heads"]], list(d["top1"]), list(d["prob"]), [tuple(h) for h in d["pool"]],
                   float(d["scale"]), int(d["n"]), float(d.get("seconds", 0.0)), bool(d.get("done", False)))

    def to_pandas(self):
        """One row per step: ``step``, ``layer``, ``head``, ``top1``, ``prob``."""
        import pandas as pd
        return pd.DataFrame([{"step": i + 1, "layer": l, "head": h, "top1": a, "prob": p}
                             for i, ((l, h), a, p) in enumerate(zip(self.heads, self.top1, self.prob))])


def greedy_heads(
    model: IVModel,
    mean_acts: Float[Tensor, "layers heads d_head"],
    prompts: EncodedPrompts,
    pool: Sequence[tuple[int, int]],
    *,
    scale: float = 3.0,
    max_heads: int = 8,
    batch_size: int = 32,
    progress: bool = True,
    resume: GreedyPath | None = None,
    on_step: Callable[[GreedyPath], None] | None = None,
) -> GreedyPath:
    """Choose heads one at a time for what the IV is for: zero-shot accuracy.

    At each step every head of ``pool`` not yet chosen is tried: all chosen heads plus that one
    are set to ``scale`` x their mean at the last token (the heads injection, see
    `ivkit.vectors`) on the zero-shot ``prompts``, and the head giving the best top-1
    accuracy, then the best mean answer probability, is added (the earlier one in ``pool`` on an
    exact tie). The path stops when no head improves that score or ``max_heads`` are chosen.

    Cost: about ``len(pool) * max_heads`` scorings of ``prompts``; keep the pool small (the top
    15 or so of a ranking) and the prompts held out from the ones the heads are judged on later.

    Args:
        mean_acts: clean mean head outputs ``(n_layers, n_heads, d_head)``.
        prompts: zero-shot selection prompts (encoded).
        pool: candidate ``(layer, head)`` pairs.
        resume: a path this search stopped in (same arguments): it continues from its last step
            and gives what an uninterrupted search gives.
        on_step: called with the path so far after each step (to save it).
    """
    g = model.geometry
    if tuple(mean_acts.shape) != (g.n_layers, g.n_heads, g.d_head):
        raise InputError(f"mean_acts has shape {tuple(mean_acts.shape)}; {model.name} needs "
                         f"({g.n_layers}, {g.n_heads}, {g.d_head})")
    pool = list(dict.fromkeys((int(l), int(h)) for l, h in pool))
    if not pool:
        raise InputError("greedy_heads needs at least one candidate head in pool")
    if int(max_heads) < 1:
        raise InputError(f"max_heads must be at least 1, got {max_heads}")
    if len(prompts) == 0:
        raise InputError("greedy_heads needs at least one selection prompt")
    t0 = time.perf_counter()
    path = resume if resume is not None else GreedyPath([], [], [], pool, float(scale), len(prompts))
    if (path.pool, path.scale, path.n) != (pool, float(scale), len(prompts)):
        raise InputError("resume: that greedy path was searched with another pool, scale or selection set")
    best = (path.top1[-1], path.prob[-1]) if path.heads else (-1.0, -1.0)
    cap = min(int(max_heads), len(pool))
    bar = progress_bar(None, progress=progress, total=cap * len(pool), desc="greedy heads")
    bar.update(len(path.heads) * len(pool))
    while len(path.heads) < cap and not path.done:
        step_best, step_head = None, None
        for hd in pool:
            if hd in path.heads:
                continue
            iv = InstructionVector.build(model, mean_acts, heads=path.heads + [hd], injection="heads", scale=scale)
            s = score_prompts(model, prompts, vector=iv, batch_size=batch_size)
            key = (float((s.ranks == 0).float().mean()), float(s.probs.mean()))
            if step_best is None or key > step_best:
                step_best, step_head = key, hd
            bar.update(1)
        seconds = path.seconds + time.perf_counter() - t0
        t0 = time.perf_counter()
        if step_best <= best:
            path = dataclasses.replace(path, seconds=seconds, done=True)
        else:
            best = step_best
            path = dataclasses.replace(path, heads=path.heads + [step_head], top1=path.top1 + [step_best[0]],
                                       prob=path.prob + [step_best[1]], seconds=seconds)
            log.info("greedy heads: + %d.%d -> top-1 %.3f, prob %.3f", *step_head, *step_best)
        if on_step is not None:
            on_step(path)
    bar.close()
    return dataclasses.replace(path, seconds=path.seconds + time.perf_counter() - t0, done=True)
