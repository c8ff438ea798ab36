"""Training data: ``{"input", "output"}`` pairs written as instruction prompts, their tokens, and
where each prompt ends.

Each example becomes ``prompt + answer + EOS``: the prompt is ``"{instruction}\\n\\nQ: {input}\\nA:"``
(or the model's chat template, or the bare ``Q:/A:`` template when there is no instruction), the
answer ``" {output}"``. The loss is on the answer tokens only (the prompt's labels are ``-100``).
``prompt_end`` is the index of the last prompt token: where an IV is injected and where the
"last prompt token" KL of IV-guided training is read; the logits at ``prompt_end .. len - 2``
predict the answer's tokens (the "answer positions").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from ..core.prompts import PromptTemplate, make_prompt
from ..core.tasks import Example


@dataclass(frozen=True)
class Features:
    """One training example's tokens.

    Attributes:
        input_ids: prompt, answer and EOS tokens.
        labels: ``-100`` on the prompt, the tokens themselves on the answer and EOS.
        prompt_end: index of the last prompt token in ``input_ids``.
    """

    input_ids: list[int]
    labels: list[int]
    prompt_end: int

    @property
    def answer_positions(self) -> int:
        """How many positions predict an answer token (``prompt_end`` up to the second-to-last)."""
        return len(self.input_ids) - 1 - self.prompt_end


def build_features(model: Any, examples: Sequence[Example], *, instruction: str | None, chat: bool,
                   template: PromptTemplate, max_len: int) -> list[Features]:
    """Tokens, labels and prompt ends of ``examples`` (``model``: an `ivkit.IVModel`).
    A sequence longer than ``max_len`` loses tokens from its start (the prompt), never its answer."""
    eos = model.tokenizer.eos_token_id
    out = []
    for ex in examples:
        if chat:
            p = make_prompt(ex, style="chat", instruction=instruction, tokenizer=model.tokenizer)
        elif instruction:
            p = make_prompt(ex, style="instruction", instruction=instruction, template=template)
        else:
            p = make_prompt(ex, style="zero_shot", template=template)
        prompt_ids = model.encode(p.text, add_special_tokens=p.add_special_tokens)
        full = model.encode(p.text + p.answer, add_special_tokens=p.add_special_tokens)
        if full[:len(prompt_ids)] != prompt_ids:
            full = prompt_ids + model.encode(p.answer, add_special_tokens=False)
        ids = full + ([eos] if eos is not None else [])
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
        cut = max(0, len(ids) - max_len)
        out.append(Features(ids[cut:], labels[cut:], max(0, len(prompt_ids) - 1 - cut)))
    return out


class FeatureDataset(torch.utils.data.Dataset):
    """The features as a map-style dataset of dicts (``index`` identifies the example, so that
    cached teacher outputs can be looked up)."""

    def __init__(self, features: Sequence[Features]):
        self.features = list(features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.features[i]
        return {"input_ids": f.input_ids, "labels": f.labels, "prompt_end": f.prompt_end, "index": i}


class Collator:
    """Right-pads a list of `FeatureDataset` items into a batch (training needs no
    last-token alignment): ``input_ids``, ``attention_mask``, ``labels`` ``(B, T)``, and
    ``prompt_end``, ``index`` ``(B,)``."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Int[Tensor, "..."]]:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for r, it in enumerate(items):
            n = len(it["input_ids"])
            ids[r, :n] = torch.tensor(it["input_ids"])
            labels[r, :n] = torch.tensor(it["labels"])
            mask[r, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "prompt_end": torch.tensor([it["prompt_end"] for it in items]),
                "index": torch.tensor([it["index"] for it in items])}
