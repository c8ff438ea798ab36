"""Task inference, seen inside: which attention heads carry "this prompt is from the continuous
prior", and what fine-tuning does to them.

Three measurements, all at the *query* position (the last input, whose label is predicted from the
``n`` examples before it), for each ``n`` in ``examples``:

* `rank_heads`: for every head, put its continuous-prior output (``source="mean"``: its
  mean over continuous-prior prompts, the instruction-vector recipe; ``source="paired"``: its
  output on the i-th continuous-prior prompt) into runs on discrete-prior prompts, and measure how
  far the prediction moves toward the ridge answer (the continuous prior's Bayes answer) of the
  discrete-prior prompt: ``score = sum_i (patched_i - clean_i)(ridge_i - clean_i) /
  sum_i (ridge_i - clean_i)^2`` (1: all the way to ridge, 0: no move, negative: away). Pooled over
  ``examples``; bootstrap intervals over prompts.
* `compare_rankings`: the same heads' scores in the pretrained and the fine-tuned model, and
  the agreement of the two rankings.
* `patch_from_pretrained`: on continuous-prior prompts, replace chosen heads' outputs in the
  fine-tuned model with the pretrained model's outputs on the same prompt, and measure the loss
  (next to the fine-tuned and pretrained models, and ``k`` random heads as a control).

The interventions are ivkit's own (`ivkit.models.hooks.record_head_outputs` and
`patch_head_outputs`), attached to the GPT-2 modules through
`ivkit.synthetic.model.hookable`: the head outputs are the input of ``attn.c_proj``, so a
patch reaches the residual stream through ``W_O`` as a real head output would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError
from ..core.options import check_at_least, check_choice
from ..core.stats import rank_agreement
from ..models.hooks import patch_head_outputs, record_head_outputs
from .bayes import ridge_predictions
from .data import RegressionPrompts, RegressionTask
from .measure import bootstrap_interval, mean_interval, predict, ratio_of_gains
from .model import RegressionGPT2, hookable

Source = Literal["mean", "paired"]
Head = tuple[int, int]


def _check_examples(examples: Sequence[int], prompts: RegressionPrompts) -> tuple[int, ...]:
    if not examples:
        raise InputError("examples needs at least one count of in-context examples")
    n_max = prompts.xs.shape[1] - 1
    for n in examples:
        check_at_least("examples", n, 0)
        if n > n_max:
            raise InputError(f"examples={n}: the prompts have room for at most {n_max} examples before the query")
    return tuple(int(n) for n in examples)


@torch.no_grad()
def query_head_outputs(net: RegressionGPT2, prompts: RegressionPrompts, n: int) -> Float[Tensor, "batch layer head d_head"]:
    """Every head's output at the query after ``n`` examples: ``(batch, n_layers, n_heads, d_head)``."""
    sub = prompts.head(n + 1)
    with record_head_outputs(hookable(net), positions=-1) as rec:
        net(sub.xs, sub.ys)
    return rec.stack()


@torch.no_grad()
def patched_query_predictions(net: RegressionGPT2, prompts: RegressionPrompts, n: int, heads: Sequence[Head],
                              values: Float[Tensor, "batch layer head d_head"] | Float[Tensor, "layer head d_head"]
                              ) -> Float[Tensor, " batch"]:
    """The prediction at the query after ``n`` examples with ``heads`` set to ``values[.., layer,
    head]`` (per prompt, or one value for every prompt) at the query position."""
    view = hookable(net)
    g = view.geometry
    patches: dict[int, tuple[Tensor, Tensor]] = {}
    for layer, h in heads:
        if not (0 <= layer < g.n_layers and 0 <= h < g.n_heads):
            raise InputError(f"head ({layer}, {h}) does not exist: the model has {g.n_layers} layers of {g.n_heads} heads")
        if layer not in patches:
            patches[layer] = (torch.zeros(g.n_heads, dtype=torch.bool), values[..., layer, :, :])
        patches[layer][0][h] = True
    sub = prompts.head(n + 1)
    with patch_head_outputs(view, patches, positions=-1):
        return net(sub.xs, sub.ys)[:, -1]


@dataclass(frozen=True)
class HeadRanking:
    """How far each head's continuous-prior output moves discrete-prompt predictions toward ridge.

    Attributes:
        model: a label.
        scores: ``(n_layers, n_heads)`` pooled scores (see the module docstring).
        intervals: ``(n_layers, n_heads, 2)`` bootstrap 95% intervals of the scores.
        examples: the example counts pooled over.
        source: ``mean`` or ``paired``.
        n_prompts: discrete-prior prompts patched into (and as many continuous-prior sources).
    """

    model: str
    scores: np.ndarray = field(repr=False)
    intervals: np.ndarray = field(repr=False)
    examples: tuple[int, ...]
    source: str
    n_prompts: int

    def to_dict(self) -> dict:
        return {"model": self.model, "scores": self.scores.tolist(), "intervals": self.intervals.tolist(),
                "examples": list(self.examples), "source": self.source, "n_prompts": self.n_prompts}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadRanking":
        return cls(d["model"], np.asarray(d["scores"], dtype=float), np.asarray(d["intervals"], dtype=float),
                   tuple(d["examples"]), d["source"], int(d["n_prompts"]))

    def top(self, k: int = 3) -> list[Head]:
        """The ``k`` heads with the largest scores, best first."""
        order = np.argsort(-self.scores, axis=None, kind="stable")[:k]
        return [tuple(int(i) for i in np.unravel_index(o, self.scores.shape)) for o in order]

    def to_pandas(self):
        import pandas as pd

        n_layers, n_heads = self.scores.shape
        rank = {h: r + 1 for r, h in enumerate(self.top(n_layers * n_heads))}
        return pd.DataFrame([{"model": self.model, "layer": l, "head": h, "score": float(self.scores[l, h]),
                              "lo": float(self.intervals[l, h, 0]), "hi": float(self.intervals[l, h, 1]), "rank": rank[(l, h)]}
                             for l in range(n_layers) for h in range(n_heads)])

    def plot(self):
        from ..core.plots import head_heatmap

        return head_heatmap(self.scores, marked=self.top(3), colorbar="toward ridge",
                            title=f"{self.model}: fraction of the way to ridge when one head's continuous-prior output "
                                  f"({self.source}) is patched into discrete-prior runs, examples {list(self.examples)}")

    def __repr__(self) -> str:
        body = ", ".join(f"L{l}H{h} {self.scores[l, h]:+.3f} [{self.intervals[l, h, 0]:+.3f}, {self.intervals[l, h, 1]:+.3f}]"
                         for l, h in self.top(3))
        return f"HeadRanking({self.model}, {self.source}, {self.n_prompts} prompts, examples {list(self.examples)}: top {body})"


def _toward(w: np.ndarray, patched: np.ndarray, clean: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``sum_i (patched_i - clean_i)(target_i - clean_i) / sum_i (target_i - clean_i)^2`` under each
    row of bootstrap weights ``w``."""
    gap = target - clean
    return (w @ ((patched - clean) * gap)) / (w @ (gap * gap))


def rank_heads(net: RegressionGPT2, discrete: RegressionPrompts, continuous: RegressionPrompts, task: RegressionTask, *,
               examples: Sequence[int] = (4, 8, 16), source: Source = "mean", model: str = "model",
               seed: int = 0) -> HeadRanking:
    """Score every head (see the module docstring). ``discrete`` and ``continuous`` hold prompts of
    each prior (the same number of each for ``source="paired"``)."""
    check_choice("source", source, Source)
    examples = _check_examples(examples, discrete)
    if source == "paired" and len(discrete) != len(continuous):
        raise InputError(f"source='paired' needs as many continuous prompts as discrete ones "
                         f"({len(continuous)} != {len(discrete)})")
    g = hookable(net).geometry
    per_head: dict[Head, list[np.ndarray]] = {(l, h): [] for l in range(g.n_layers) for h in range(g.n_heads)}
    clean_all, ridge_all = [], []
    for n in examples:
        z = query_head_outputs(net, continuous, n)
        values = z.mean(dim=0) if source == "mean" else z
        clean_all.append(predict(net, discrete.head(n + 1))[:, -1].double().numpy())
        ridge_all.append(ridge_predictions(discrete.xs[:, :n + 1], discrete.ys[:, :n + 1], noise=task.noise,
                                           tau=task.tau)[:, -1].double().numpy())
        for head in per_head:
            per_head[head].append(patched_query_predictions(net, discrete, n, [head], values).double().numpy())
    clean, ridge = np.concatenate(clean_all), np.concatenate(ridge_all)
    scores = np.zeros((g.n_layers, g.n_heads))
    intervals = np.zeros((g.n_layers, g.n_heads, 2))
    for (l, h), parts in per_head.items():
        point, lo, hi = bootstrap_interval(_toward, [np.concatenate(parts), clean, ridge], seed=seed)
        scores[l, h], intervals[l, h] = point, (lo, hi)
    return HeadRanking(model, scores, intervals, examples, source, len(discrete))


@dataclass(frozen=True)
class HeadChange:
    """The heads ranked on the pretrained model, scored again on the fine-tuned one.

    Attributes:
        rows: ``head``, ``pretrained`` / ``fine-tuned`` scores with their intervals.
        spearman: rank correlation of the two models' scores over all heads.
        top_overlap: the share of the pretrained top-``k`` also in the fine-tuned top-``k``.
    """

    rows: tuple[dict, ...] = field(repr=False)
    spearman: float
    top_overlap: float
    k: int

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self.rows))

    def plot(self):
        from ..core.plots import interval_lines

        f = self.to_pandas()
        long = [{"head": r["head"], "model": m, "score": r[m], "lo": r[f"{m}_lo"], "hi": r[f"{m}_hi"]}
                for r in f.to_dict("records") for m in ("pretrained", "fine-tuned")]
        import pandas as pd

        return interval_lines(pd.DataFrame(long), x="head", y="score", lo="lo", hi="hi", line="model",
                              title="Top heads of the pretrained model: score before and after fine-tuning",
                              x_title="head (pretrained ranking)", y_title="fraction of the way to ridge")

    def __repr__(self) -> str:
        body = ", ".join(f"{r['head']}: {r['pretrained']:+.3f} -> {r['fine-tuned']:+.3f}" for r in self.rows)
        return f"HeadChange(top {self.k}: {body}; Spearman {self.spearman:.2f}, top-{self.k} overlap {self.top_overlap:.2f})"


def compare_rankings(pretrained: HeadRanking, finetuned: HeadRanking, *, k: int = 3) -> HeadChange:
    """The pretrained model's top-``k`` heads, scored in both models, and how the rankings agree."""
    check_at_least("k", k, 1)
    if pretrained.scores.shape != finetuned.scores.shape:
        raise InputError("the two rankings come from models of different shapes")
    rows = []
    for l, h in pretrained.top(k):
        row = {"head": f"L{l}H{h}"}
        for name, r in (("pretrained", pretrained), ("fine-tuned", finetuned)):
            row.update({name: float(r.scores[l, h]), f"{name}_lo": float(r.intervals[l, h, 0]),
                        f"{name}_hi": float(r.intervals[l, h, 1])})
        rows.append(row)
    agree = rank_agreement(torch.from_numpy(pretrained.scores), torch.from_numpy(finetuned.scores), k=k)
    return HeadChange(tuple(rows), agree["spearman"], agree[f"top{k}_overlap"], k)


@dataclass(frozen=True)
class HeadRecovery:
    """Continuous-prior loss of the fine-tuned model with heads taken from the pretrained model.

    Attributes:
        rows: ``condition``, ``mse``, ``lo``, ``hi`` (t intervals over prompts of the per-prompt mean
            over ``examples``), ``vs_finetuned`` (minus the fine-tuned model's loss, paired over
            prompts) with ``vs_lo``, ``vs_hi``, and ``recovered`` (``(L_ft - L) / (L_ft - L_pre)``)
            with its bootstrap ``rec_lo``, ``rec_hi``.
        heads: the heads patched.
        examples: the example counts.
    """

    rows: tuple[dict, ...] = field(repr=False)
    heads: tuple[Head, ...]
    examples: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"rows": list(self.rows), "heads": [list(h) for h in self.heads], "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadRecovery":
        rows = tuple({k: (float("nan") if v is None else v) for k, v in r.items()} for r in d["rows"])
        return cls(rows, tuple(tuple(h) for h in d["heads"]), tuple(d["examples"]))

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self.rows))

    def plot(self):
        from ..core.plots import interval_bars

        return interval_bars(self.to_pandas(), x="condition", y="mse", lo="lo", hi="hi", y_title="mean squared error",
                             title=f"Continuous-prior loss at the query, examples {list(self.examples)} (95% t intervals)")

    def __repr__(self) -> str:
        body = "; ".join(f"{r['condition']}: {r['mse']:.3f}" + (f" (recovers {r['recovered']:.0%})"
                         if np.isfinite(r["recovered"]) else "") for r in self.rows)
        return f"HeadRecovery(heads {[f'L{l}H{h}' for l, h in self.heads]}, examples {list(self.examples)}: {body})"


def patch_from_pretrained(pretrained: RegressionGPT2, finetuned: RegressionGPT2, prompts: RegressionPrompts,
                          heads: Sequence[Head], *, examples: Sequence[int] = (4, 8, 16), random_draws: int = 5,
                          extra: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> HeadRecovery:
    """Loss of the fine-tuned model on ``prompts`` with ``heads`` (and, as controls, all heads and
    ``random_draws`` draws of as many random heads) set to the pretrained model's outputs on the
    same prompt at the query; ``extra`` adds per-prompt losses of other conditions (e.g. the
    conjugate), already averaged over the same ``examples``."""
    examples = _check_examples(examples, prompts)
    heads = [tuple(h) for h in heads]
    if not heads:
        raise InputError("heads needs at least one (layer, head)")
    g = hookable(finetuned).geometry
    everything = [(l, h) for l in range(g.n_layers) for h in range(g.n_heads)]
    rng = np.random.default_rng(seed)
    draws = [[everything[i] for i in rng.choice(len(everything), len(heads), replace=False)] for _ in range(random_draws)]
    per: dict[str, list[np.ndarray]] = {}
    for n in examples:
        y = prompts.ys[:, n].double().numpy()
        z = query_head_outputs(pretrained, prompts, n)
        runs = {"fine-tuned": predict(finetuned, prompts.head(n + 1))[:, -1],
                "pretrained": predict(pretrained, prompts.head(n + 1))[:, -1],
                "fine-tuned + pretrained top heads": patched_query_predictions(finetuned, prompts, n, heads, z),
                "fine-tuned + pretrained all heads": patched_query_predictions(finetuned, prompts, n, everything, z)}
        rand = np.mean([(patched_query_predictions(finetuned, prompts, n, d, z).double().numpy() - y) ** 2 for d in draws], 0)
        for name, pred in runs.items():
            per.setdefault(name, []).append((pred.double().numpy() - y) ** 2)
        per.setdefault(f"fine-tuned + pretrained {len(heads)} random heads", []).append(rand)
    losses = {k: np.mean(v, axis=0) for k, v in per.items()}
    losses.update(extra or {})
    ft, pre = losses["fine-tuned"], losses["pretrained"]
    rows = []
    for name, v in losses.items():
        m, lo, hi = mean_interval(v)
        d, dlo, dhi = mean_interval(v - ft)
        r, rlo, rhi = bootstrap_interval(ratio_of_gains, [ft, v, pre], seed=seed)
        rows.append({"condition": name, "mse": m, "lo": lo, "hi": hi, "vs_finetuned": d, "vs_lo": dlo, "vs_hi": dhi,
                     "recovered": r, "rec_lo": rlo, "rec_hi": rhi})
    return HeadRecovery(tuple(rows), tuple(heads), examples)
