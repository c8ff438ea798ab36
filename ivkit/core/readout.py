"""Reading answers off logits: the one implementation every scorer and metric uses.

* `answer_rank_prob`: takes: logits ``(rows, vocab)``, targets ``(rows,)``; returns: rank (0 =
  top-1) and probability ``(rows,)``
* `answer_logprob`: takes: logits ``(rows, S, vocab)`` of the last S positions, each row's answer
  token ids; returns: summed log-probability ``(rows,)``
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor


def answer_rank_prob(logits: Float[Tensor, "rows vocab"], target: Int[Tensor, " rows"]
                     ) -> tuple[Int[Tensor, " rows"], Float[Tensor, " rows"]]:
    """Rank (how many tokens score higher; 0 is top-1) and softmax probability of each row's
    target token."""
    tgt = target[:, None]
    ranks = (logits > logits.gather(-1, tgt)).sum(-1)
    probs = torch.softmax(logits, -1).gather(-1, tgt)[:, 0]
    return ranks, probs


def answer_prob(logits: Float[Tensor, "rows vocab"], target: Int[Tensor, " rows"]) -> Float[Tensor, " rows"]:
    """Softmax probability of each row's target token."""
    return torch.softmax(logits, -1).gather(-1, target[:, None])[:, 0]


def answer_logit(logits: Float[Tensor, "rows vocab"], target: Int[Tensor, " rows"]) -> Float[Tensor, " rows"]:
    """The raw logit of each row's target token."""
    return logits.gather(-1, target[:, None])[:, 0]


def answer_logprob(logits: Float[Tensor, "rows S vocab"], answers: Sequence[Sequence[int]]) -> Float[Tensor, " rows"]:
    """Summed log-probability of each row's whole answer. ``logits`` are the last ``S`` positions
    of each row, whose last ``len(answer)`` tokens are the answer: the answer's token ``j`` is
    predicted at position ``S - len(answer) - 1 + j``."""
    logp = torch.log_softmax(logits, -1)
    s = logits.shape[1]
    out = torch.empty(len(answers), device=logits.device, dtype=logp.dtype)
    for r, ans in enumerate(answers):
        start = s - len(ans) - 1
        tgt = torch.tensor(list(ans), device=logits.device)
        out[r] = logp[r, start:start + len(ans)].gather(-1, tgt[:, None]).sum()
    return out
