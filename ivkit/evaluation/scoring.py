"""Scoring prompts: the rank and probability of each prompt's answer token, optionally with an IV
injected (`score_prompts`). First-token accuracy at top-``k``: the answer's first token is
among the ``k`` highest logits at the last position (rank 0 is top-1)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..core.errors import InputError
from ..core.io import progress_bar
from ..core.options import Injection
from ..core.prompts import EncodedPrompts
from ..core.readout import answer_rank_prob
from ..models.hooks import add_to_residual, record_head_outputs
from ..models.model import IVModel, length_batches
from ..vectors import InstructionVector


@dataclass(frozen=True, eq=False)
class Scores:
    """Per-prompt results of `score_prompts`.

    Attributes:
        ranks: ``(n,)`` rank of the answer's first token (0 = top-1).
        probs: ``(n,)`` its probability.
        heads: ``(n, n_layers, n_heads, d_head)`` head outputs at the last token, when asked for.
        top: ``(n,)`` the most likely next token (what greedy decoding would write first).
    """

    ranks: Int[Tensor, " n"]
    probs: Float[Tensor, " n"]
    heads: Float[Tensor, "n layers heads d_head"] | None = None
    top: Int[Tensor, " n"] | None = None

    def accuracy(self, k: int = 1) -> float:
        return float((self.ranks < k).float().mean()) if len(self.ranks) else float("nan")

    def loose_hits(self, tokenizer: Any, prompts: EncodedPrompts) -> Bool[Tensor, " n"]:
        """Which prompts' most likely next token is the answer's first token up to case and
        surrounding spaces (``" Hot"`` for ``" hot"``): right in content, whatever the format."""
        if self.top is None:
            raise InputError("these scores have no top tokens")
        norm = lambda t: tokenizer.decode([int(t)]).strip().lower()  # noqa: E731
        return torch.tensor([norm(a) == norm(b) and bool(norm(a)) for a, b in zip(self.top, prompts.first_token)],
                            dtype=torch.bool)

    @property
    def mean_prob(self) -> float:
        return float(self.probs.mean()) if len(self.probs) else float("nan")


@torch.inference_mode()
def score_prompts(
    model: IVModel,
    prompts: EncodedPrompts,
    *,
    vector: Float[Tensor, " d_model"] | InstructionVector | None = None,
    layer: int | None = None,
    scale: float | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
    record_heads: bool = False,
    injection: Injection | None = None,
) -> Scores:
    """Rank and probability of each prompt's answer token at the last position.

    Args:
        vector: optional ``(d_model,)`` vector added after block ``layer`` at the last token, times
            ``scale``; or an `InstructionVector`, injected as it says
            (`apply`).
        layer: required with a plain vector; an IV's own layer otherwise.
        scale: the multiplier; default: an IV's own scale, 1 for a plain vector.
        injection: for an IV, ``"residual"`` or ``"heads"``; default: the IV's own (``"residual"``
            when ``layer`` is given).
        record_heads: also return every head's last-token output (the same pass; used by the
            extraction filter so that the mean activations cost nothing extra).
    """
    iv = vector if isinstance(vector, InstructionVector) else None
    if iv is not None:  # checked and resolved once, injected per batch
        iv.check_compatible(model)
        injection, layer = iv.resolve_injection(layer, injection)
        scale = iv.scale if scale is None else scale
    elif vector is not None and layer is None:
        raise InputError("score_prompts: a vector needs a layer")
    scale = 1.0 if scale is None else scale
    g = model.geometry
    ranks = torch.empty(len(prompts), dtype=torch.long)
    probs = torch.empty(len(prompts))
    top = torch.empty(len(prompts), dtype=torch.long)
    heads = torch.empty(len(prompts), g.n_layers, g.n_heads, g.d_head) if record_heads else None
    batches = length_batches([len(s) for s in prompts.input_ids], batch_size)
    for idx in progress_bar(batches, desc=desc, progress=progress):
        batch = model.make_batch([prompts.input_ids[i] for i in idx])
        target = prompts.first_token[idx].to(model.device)
        with ExitStack() as stack:
            if iv is not None:
                stack.enter_context(iv._injected(model, injection, layer, scale))
            elif vector is not None:
                stack.enter_context(add_to_residual(model, layer, vector, scale=scale))
            rec = stack.enter_context(record_head_outputs(model)) if record_heads else None
            logits = model.forward(batch)[:, -1]
        if rec is not None:
            heads[idx] = rec.stack().float().cpu()
        rank, prob = answer_rank_prob(logits, target)
        ranks[idx], probs[idx], top[idx] = rank.cpu(), prob.cpu(), logits.argmax(-1).cpu()
    return Scores(ranks, probs, heads, top)
