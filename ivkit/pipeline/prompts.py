"""The extraction's prompts: clean prompts from training queries, filtered to the ones the model
answers right, and the corrupted trials derived from them (`prepare_prompts`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import AnswerTokenError, TaskError
from ..core.options import CleanStyle, check_choice
from ..core.prompts import (
    DEFAULT_TEMPLATE,
    EncodedPrompts,
    Prompt,
    PromptTemplate,
    encode_prompts,
    make_prompt,
    sample_prompts,
)
from ..core.tasks import Task, TaskSplit, load_task
from ..evaluation import score_prompts
from ..models.model import IVModel

log = logging.getLogger(__name__)


def filter_prompts(model: IVModel, prompts: Sequence[Prompt], need: int, *, batch_size: int = 16,
                   progress: bool = True, record_heads: bool = False
                   ) -> tuple[EncodedPrompts, dict[str, Any], torch.Tensor | None]:
    """Keep the prompts whose answer's first token ranks first.

    Prompts are tokenised and scored in chunks, in order, until ``need`` are found or they run
    out, so the result is deterministic and a large task costs only what it needs.

    Returns:
        The kept prompts (at most ``need``), ``{"tried", "correct", "accuracy", "dropped"}``, and
        with ``record_heads`` their head outputs at the last token ``(kept, n_layers, n_heads,
        d_head)`` from the same passes (else None).
    """
    kept: list[EncodedPrompts] = []
    heads: list[torch.Tensor] = []
    n_kept = tried = dropped = 0
    chunk = max(batch_size * 4, 32)
    for start in range(0, len(prompts), chunk):
        try:
            enc = encode_prompts(model, prompts[start:start + chunk], log_dropped=False)
        except AnswerTokenError:
            dropped += len(prompts[start:start + chunk])
            continue
        dropped += len(enc.dropped)
        scores = score_prompts(model, enc, batch_size=batch_size, progress=progress, desc="filter",
                               record_heads=record_heads)
        tried += len(enc)
        right = [i for i, r in enumerate(scores.ranks.tolist()) if r == 0]
        kept.append(enc.subset(right))
        if record_heads:
            heads.append(scores.heads[right])
        n_kept += len(right)
        if n_kept >= need:
            break
    if dropped:
        log.warning("filter: skipped %d prompts whose answer has no usable first token", dropped)
    merged = EncodedPrompts.concat(kept) if kept else EncodedPrompts([], [], [], torch.empty(0, dtype=torch.long))
    stats = {"tried": tried, "correct": n_kept, "accuracy": n_kept / max(tried, 1), "dropped": dropped}
    n = min(need, len(merged))
    return merged.subset(range(n)), stats, (torch.cat(heads)[:n] if record_heads and heads else None)


@dataclass(frozen=True, eq=False)
class ExtractionPrompts:
    """The prompts an extraction uses.

    Attributes:
        mean: clean prompts for the mean head activations.
        mean_heads: their head outputs ``(n, n_layers, n_heads, d_head)``, recorded during the
            filter's passes, or None (then `ivkit.mean_head_activations` computes them).
        corrupted: the trials: clean prompts with their demonstrations' labels shuffled.
        filter: statistics of the correctness filter.
        split: the task split they come from.
    """

    mean: EncodedPrompts
    corrupted: EncodedPrompts
    filter: dict[str, Any]
    split: TaskSplit
    mean_heads: Float[Tensor, "n layers heads d_head"] | None = None


def prepare_prompts(
    model: IVModel,
    task: Task | str,
    *,
    shots: int = 10,
    mean_prompts: int = 100,
    trials: int = 25,
    seed: int = 0,
    style: CleanStyle = "few_shot",
    template: PromptTemplate = DEFAULT_TEMPLATE,
    filter_correct: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> ExtractionPrompts:
    """The first stage of `ivkit.extract`: split, build clean prompts from training queries,
    keep the ones the model gets right (recording their head outputs on the way), and derive the
    corrupted trials from the next kept ones."""
    task = load_task(task)
    check_choice("style", style, CleanStyle)
    split = task.split(seed)
    log.info("task %s: %s", task.name, split.sizes())
    need = mean_prompts + trials
    clean = sample_prompts(split.train, style=style, demo_pool=split.train, shots=shots, seed=seed,
                           template=template, instruction=task.instruction, tokenizer=model.tokenizer, stream=1)
    if filter_correct:
        kept, fstats, heads = filter_prompts(model, clean, need, batch_size=batch_size, progress=progress,
                                             record_heads=True)
        log.info("filter: %d of %d clean %s prompts answered right (%.2f)", fstats["correct"], fstats["tried"],
                 style, fstats["accuracy"])
    else:
        kept, heads = encode_prompts(model, clean[:need]), None
        fstats = {"tried": 0, "correct": None, "accuracy": None, "skipped": True}
    if len(kept) == 0:
        raise TaskError(
            f"{model.name} answers none of the {fstats['tried']} clean {shots}-shot prompts of {task.name!r} "
            f"correctly, so there is no task behaviour to extract. Pick a task the model can do "
            f"(ivkit tasks --model {model.name} measures each one), or raise --shots"
        )
    if len(kept) >= need:
        n_mean, trial_idx = mean_prompts, list(range(mean_prompts, need))
    else:  # too few: average over all of them and reuse them as trials
        log.warning("only %d correct clean prompts for %d needed (%d mean + %d trials); the trials reuse "
                    "mean-activation queries", len(kept), need, mean_prompts, trials)
        n_mean, trial_idx = len(kept), list(range(min(trials, len(kept))))
    corrupted = _corrupted([kept.prompts[i] for i in trial_idx], split, shots=shots, seed=seed, template=template)
    return ExtractionPrompts(kept.subset(range(n_mean)), encode_prompts(model, corrupted), fstats, split,
                             heads[:n_mean] if heads is not None else None)


def _corrupted(clean: Sequence[Prompt], split: TaskSplit, *, shots: int, seed: int,
               template: PromptTemplate) -> list[Prompt]:
    """The trials: each clean prompt's query with its demonstrations' labels shuffled (demonstrations
    drawn from training queries for instruction-style prompts, which have none)."""
    rng = np.random.default_rng([seed, 0xC0])
    corrupted = []
    for p in clean:
        demos = p.demos
        if len(demos) < 2:  # instruction-style clean prompts carry no demonstrations: draw some
            pick = rng.choice(len(split.train), size=min(shots + 1, len(split.train)), replace=False)
            demos = tuple(split.train[int(j)] for j in pick if split.train[int(j)] != p.query)[:max(shots, 2)]
        corrupted.append(make_prompt(p.query, style="shuffled", demos=demos, template=template, rng=rng))
    return corrupted
