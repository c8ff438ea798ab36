"""Patching metrics: what an indirect effect measures, as a callable.

A metric maps the logits of each row's last ``S`` positions to one number per row, higher meaning
closer to the right answer; an indirect effect is ``metric(patched) - metric(unpatched)``. As in
TransformerLens's activation patching, which takes a ``patching_metric``, any callable can be one:
wrap it in `AnswerMetric`. The built-in ones (`METRICS`):

* ``prob``: value: probability of the answer's first token (Todd et al.); positions re-run: the last
  prompt token
* ``logit``: value: its raw logit (linear in the residual stream); positions re-run: the last prompt
  token
* ``nll``: value: log-likelihood of the whole answer (-ΔNLL as effect; Jiang et al.'s metric for
  generation tasks); positions re-run: the last prompt token and the answer's

With ``whole_answer=True`` the answer's tokens are appended to each prompt; the patch is still
applied at the last *prompt* token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError
from ..core.options import MetricName, check_choice
from ..core.prompts import EncodedPrompts
from ..core.readout import answer_logit, answer_logprob, answer_prob


@dataclass(frozen=True)
class MetricInputs:
    """One prompt prepared for a metric.

    Attributes:
        ids: token ids (the prompt, plus the answer for whole-answer metrics).
        position: index of the last prompt token within ``ids`` (where patches go).
        first_token: the answer's first token.
        answer_ids: the answer's tokens.
    """

    ids: list[int]
    position: int
    first_token: int
    answer_ids: list[int]


@dataclass(frozen=True)
class AnswerMetric:
    """A patching metric (see the module docstring).

    Attributes:
        name: recorded in results (``IndirectEffects.metric``).
        fn: ``fn(logits (rows, S, vocab), items) -> (rows,)``; ``logits[:, -1]`` is the last
            position of each row, and with ``whole_answer`` each row's answer occupies its last
            ``len(answer_ids)`` tokens.
        whole_answer: append the answer's tokens to each prompt and re-run them.
    """

    name: str
    fn: Callable[[Float[Tensor, "rows S vocab"], Sequence[MetricInputs]], Float[Tensor, " rows"]]
    whole_answer: bool = False

    def positions(self, items: Sequence[MetricInputs]) -> int:
        """``S``: the last positions every row needs (1, or the last prompt token plus the answer)."""
        return max(len(it.ids) - it.position for it in items) if self.whole_answer else 1

    def __call__(self, logits: Float[Tensor, "rows S vocab"], items: Sequence[MetricInputs]) -> Float[Tensor, " rows"]:
        return self.fn(logits, items)

    def prepare(self, prompts: EncodedPrompts) -> list[MetricInputs]:
        """Each prompt's ids (with the answer appended for whole-answer metrics) and targets."""
        out = []
        for ids, ans, first in zip(prompts.input_ids, prompts.answer_ids, prompts.first_token.tolist()):
            seq = list(ids) + (list(ans) if self.whole_answer else [])
            out.append(MetricInputs(seq, len(ids) - 1, int(first), list(ans)))
        return out


def _first(items: Sequence[MetricInputs], device: torch.device) -> Tensor:
    return torch.tensor([it.first_token for it in items], device=device)


#: The built-in metrics by name.
METRICS: dict[str, AnswerMetric] = {
    "prob": AnswerMetric("prob", lambda lg, items: answer_prob(lg[:, -1], _first(items, lg.device))),
    "logit": AnswerMetric("logit", lambda lg, items: answer_logit(lg[:, -1], _first(items, lg.device))),
    "nll": AnswerMetric("nll", lambda lg, items: answer_logprob(lg, [it.answer_ids for it in items]),
                        whole_answer=True),
}


def resolve_metric(metric: "MetricName | AnswerMetric") -> AnswerMetric:
    """An `AnswerMetric`: a built-in one by name, or the one given."""
    if isinstance(metric, AnswerMetric):
        return metric
    if callable(metric):
        raise InputError("wrap a custom metric in ivkit.mediation.AnswerMetric(name, fn, whole_answer=...)")
    return METRICS[check_choice("metric", metric, MetricName)]
