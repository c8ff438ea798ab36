"""Scoring prompts, choosing the injection layer, and the six-condition evaluation.

Concepts
--------
* **First-token accuracy**: a prompt counts as right at top-``k`` when the answer's first token is
  among the ``k`` highest logits at the last position. ``rank`` 0 means top-1.
* **Layer sweep**: the IV is added after each block in turn, on zero-shot prompts of the
  *validation* split; the best layer (top-1 accuracy, then mean probability of the answer token)
  is the injection layer. The test split is never used to choose anything.
* **Evaluation** (:func:`evaluate_iv`), on the test split, same queries in every condition:

  ================  ===============================================================
  ``zero_shot``     the query alone
  ``zero_shot_iv``  the query alone, IV added at the chosen layer
  ``shuffled``      ``shots`` demonstrations with their labels shuffled
  ``shuffled_iv``   the same, IV added
  ``few_shot``      ``shots`` clean demonstrations
  ``random_control`` the query alone, plus a random vector of the IV's norm
  ================  ===============================================================
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .hooks import add_to_residual
from .io import progress_bar
from .models import IVModel, length_batches
from .tasks import DEFAULT_TEMPLATE, EncodedPrompts, PromptTemplate, Task, TaskSplit, encode_prompts, load_task, sample_prompts
from .vectors import InstructionVector, random_like

log = logging.getLogger(__name__)

CONDITIONS = ("zero_shot", "zero_shot_iv", "shuffled", "shuffled_iv", "few_shot", "random_control")


@dataclass
class Scores:
    """Per-prompt results of :func:`score_prompts`.

    Attributes:
        ranks: ``(n,)`` rank of the answer's first token (0 = top-1).
        probs: ``(n,)`` its probability.
    """

    ranks: torch.Tensor
    probs: torch.Tensor

    def accuracy(self, k: int = 1) -> float:
        return float((self.ranks < k).float().mean()) if len(self.ranks) else float("nan")

    @property
    def mean_prob(self) -> float:
        return float(self.probs.mean()) if len(self.probs) else float("nan")


@torch.inference_mode()
def score_prompts(
    model: IVModel,
    prompts: EncodedPrompts,
    *,
    vector: torch.Tensor | InstructionVector | None = None,
    layer: int | None = None,
    scale: float = 1.0,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
) -> Scores:
    """Rank and probability of each prompt's answer token at the last position.

    Args:
        vector: optional ``(d_model,)`` vector (or IV) added after block ``layer`` at the last token.
        layer: required with ``vector`` unless the IV carries one.
    """
    if isinstance(vector, InstructionVector):
        vector.check_compatible(model)
        layer = vector.layer if layer is None else layer
        vector = vector.vector
    if vector is not None and layer is None:
        raise ValueError("score_prompts: a vector needs a layer")
    ranks = torch.empty(len(prompts), dtype=torch.long)
    probs = torch.empty(len(prompts))
    batches = length_batches([len(s) for s in prompts.input_ids], batch_size)
    for idx in progress_bar(batches, desc=desc, progress=progress):
        batch = model.make_batch([prompts.input_ids[i] for i in idx])
        target = prompts.first_token[idx].to(model.device)
        if vector is not None:
            with add_to_residual(model, layer, vector, scale=scale):
                logits = model.forward(batch)[:, -1]
        else:
            logits = model.forward(batch)[:, -1]
        tgt_logit = logits.gather(-1, target[:, None])
        ranks[idx] = (logits > tgt_logit).sum(-1).cpu()
        probs[idx] = torch.softmax(logits, -1).gather(-1, target[:, None])[:, 0].cpu()
    return Scores(ranks, probs)


# --------------------------------------------------------------------------------------------
# Layer sweep
# --------------------------------------------------------------------------------------------


@dataclass
class LayerSweep:
    """Accuracy of the prompts with the vector added after each layer.

    Attributes:
        layers: the layers tried.
        top1: top-1 accuracy per layer.
        mean_prob: mean probability of the answer token per layer.
        baseline_top1: accuracy with no vector.
        n: number of prompts.
        split: which split the prompts came from (``"valid"`` when choosing the layer).
    """

    layers: list[int]
    top1: list[float]
    mean_prob: list[float]
    baseline_top1: float
    baseline_prob: float
    n: int
    scale: float = 1.0
    split: str = "valid"
    seconds: float = 0.0

    @property
    def best_layer(self) -> int:
        """Highest top-1 accuracy; ties go to the higher mean probability, then the lower layer."""
        best = max(range(len(self.layers)), key=lambda i: (self.top1[i], self.mean_prob[i], -self.layers[i]))
        return self.layers[best]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame({"layer": self.layers, "top1": self.top1, "mean_prob": self.mean_prob})

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "top1": self.top1, "mean_prob": self.mean_prob,
                "baseline_top1": self.baseline_top1, "baseline_prob": self.baseline_prob, "n": self.n,
                "scale": self.scale, "split": self.split, "best_layer": self.best_layer, "seconds": self.seconds}

    def plot(self, title: str | None = None):
        from .plotting import plot_layer_sweep

        return plot_layer_sweep(self, title=title)


def layer_sweep(
    model: IVModel,
    vector: torch.Tensor | InstructionVector,
    prompts: EncodedPrompts,
    *,
    layers: Sequence[int] | None = None,
    scale: float = 1.0,
    batch_size: int = 32,
    progress: bool = True,
    split: str = "valid",
) -> LayerSweep:
    """Score ``prompts`` with the vector added after each layer in ``layers`` (default: all)."""
    t0 = time.perf_counter()
    if isinstance(vector, InstructionVector):
        vector.check_compatible(model)
        vector = vector.vector
    layers = list(range(model.geometry.n_layers)) if layers is None else list(layers)
    base = score_prompts(model, prompts, batch_size=batch_size)
    top1, mprob = [], []
    for layer in progress_bar(layers, desc="layer sweep", progress=progress):
        s = score_prompts(model, prompts, vector=vector, layer=layer, scale=scale, batch_size=batch_size)
        top1.append(s.accuracy(1))
        mprob.append(s.mean_prob)
    return LayerSweep(layers, top1, mprob, base.accuracy(1), base.mean_prob, len(prompts), scale, split,
                      time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# The six-condition evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Accuracies of :func:`evaluate_iv`.

    Attributes:
        results: condition -> ``{"top1", "top2", "top3", "mean_prob"}``.
        layer: injection layer used.
        n: number of test queries (the same in every condition).
        info: task, model, seed, shots, scale, seconds.
    """

    results: dict[str, dict[str, float]]
    layer: int
    n: int
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, condition: str) -> float:
        return self.results[condition]["top1"]

    def to_dict(self) -> dict[str, Any]:
        """Flat top-1 accuracies (``zero_shot`` ... ``random_control``), ``layer``, ``n``, plus the
        top-2/top-3 accuracies and mean probabilities under ``detail``."""
        out: dict[str, Any] = {c: self.results[c]["top1"] for c in CONDITIONS if c in self.results}
        out.update(layer=self.layer, n=self.n, detail=self.results, **self.info)
        return out

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([{"condition": c, **v} for c, v in self.results.items()])

    def plot(self, title: str | None = None):
        from .plotting import plot_evaluation

        return plot_evaluation(self, title=title)


def _metrics(s: Scores) -> dict[str, float]:
    return {"top1": s.accuracy(1), "top2": s.accuracy(2), "top3": s.accuracy(3), "mean_prob": s.mean_prob}


def evaluate_iv(
    model: IVModel,
    task: Task | str,
    iv: InstructionVector,
    *,
    layer: int | None = None,
    n_prompts: int = 100,
    shots: int = 10,
    seed: int = 0,
    scale: float = 1.0,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    split: TaskSplit | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> Evaluation:
    """Top-1/2/3 first-token accuracy on the test split in the six :data:`CONDITIONS`.

    Args:
        task: the task (its seeded split gives the test queries and the demonstrations).
        iv: the instruction vector; ``layer`` defaults to the IV's chosen layer.
        n_prompts: at most this many test queries.
        seed: seeds the split, the query order, the demonstrations, the shuffles and the random
            control, so the same seed gives the same numbers.
    """
    t0 = time.perf_counter()
    task = load_task(task)
    iv.check_compatible(model)
    layer = iv.layer if layer is None else layer
    if layer is None:
        raise ValueError("no injection layer: pass layer=... or use an IV saved by ivkit extract (it records one)")
    split = split or task.split(seed)
    common = dict(demo_pool=split.train, shots=shots, n=n_prompts, seed=seed, template=template, stream=7)
    sets = {style: encode_prompts(model, sample_prompts(split.test, style=style, **common))
            for style in ("zero_shot", "shuffled", "few_shot")}
    # Keep only queries usable in every style, in the same order.
    keep = set.intersection(*({p.query for p in e.prompts} for e in sets.values()))
    for style, enc in sets.items():
        sets[style] = enc.subset([i for i, p in enumerate(enc.prompts) if p.query in keep])
    control = random_like(iv, seed)
    runs = {
        "zero_shot": ("zero_shot", None),
        "zero_shot_iv": ("zero_shot", iv.vector),
        "shuffled": ("shuffled", None),
        "shuffled_iv": ("shuffled", iv.vector),
        "few_shot": ("few_shot", None),
        "random_control": ("zero_shot", control),
    }
    results = {}
    for cond in progress_bar(CONDITIONS, desc="evaluate", progress=progress):
        style, vec = runs[cond]
        s = score_prompts(model, sets[style], vector=vec, layer=layer if vec is not None else None, scale=scale,
                          batch_size=batch_size)
        results[cond] = _metrics(s)
    info = {"task": task.name, "model": model.name, "seed": seed, "shots": shots, "scale": scale,
            "seconds": round(time.perf_counter() - t0, 2)}
    return Evaluation(results, layer, len(sets["zero_shot"]), info)
