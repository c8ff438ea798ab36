"""Prompts: templates, prompt styles, and the tokens of each prompt's answer.

A **prompt** is text that ends where the answer should start, plus that answer. Prompt styles:

* ``few_shot``: ``shots`` demonstrations then the query, ``Q: x\\nA: y\\n\\n ... Q: xq\\nA:``;
* ``shuffled``: the same, with the demonstrations' labels permuted (the *corrupted* prompts);
* ``zero_shot``: the query alone;
* ``instruction``: a task instruction (``"Give the opposite of the word."``) then the query;
* ``chat``: the model's chat template, instruction and query as the user turn.

The **answer's first token** is what the metrics score. It is found by tokenising prompt and
prompt+answer together, so the leading space belongs to the answer token (``" cold"`` ->
``"Ġcold"``). An answer whose first token is only whitespace (as with digit-split tokenizers and
``" 1999"``) or that is empty cannot be scored; `encode_prompts` reports it.

`encode_prompts` takes any object with ``tokenizer`` and ``encode(text,
add_special_tokens=...)`` (an `ivkit.IVModel`), so this module imports nothing above the
core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .errors import AnswerTokenError, InputError, TaskError
from .options import PromptStyle, check_choice
from .tasks import Example

log = logging.getLogger(__name__)

PROMPT_STYLES: tuple[str, ...] = ("few_shot", "shuffled", "zero_shot", "instruction", "chat")

@dataclass(frozen=True)
class PromptTemplate:
    """How demonstrations and queries are written.

    Attributes:
        query: format of a query, with ``{input}``; the prompt ends with it.
        answer: format of an answer, with ``{output}``; follows the query in demonstrations and is
            what the model should produce. The leading space makes ``" cold"`` one token.
        separator: between demonstrations and before the query.
        instruction: format of the instruction prefix for the ``instruction`` style.
        name: a short id recorded in saved artifacts.
    """

    query: str = "Q: {input}\nA:"
    answer: str = " {output}"
    separator: str = "\n\n"
    instruction: str = "{instruction}\n\n"
    name: str = "qa"

    def demo(self, ex: Example) -> str:
        return self.query.format(input=ex.input) + self.answer.format(output=ex.output) + self.separator

    def to_dict(self) -> dict[str, str]:
        return {"query": self.query, "answer": self.answer, "separator": self.separator,
                "instruction": self.instruction, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "PromptTemplate":
        return cls(**{k: d[k] for k in ("query", "answer", "separator", "instruction", "name") if k in d})


DEFAULT_TEMPLATE = PromptTemplate()


@dataclass(frozen=True)
class Prompt:
    """A prompt and the answer that should follow it.

    Attributes:
        text: the prompt, without the special tokens the tokenizer adds.
        answer: the answer exactly as it follows ``text`` (leading space included).
        query: the example being asked.
        demos: the demonstrations shown, as shown (labels already shuffled for ``shuffled``).
        style: one of `PROMPT_STYLES`.
        add_special_tokens: whether tokenising ``text`` should add BOS (False for chat prompts,
            whose template writes its own).
    """

    text: str
    answer: str
    query: Example
    demos: tuple[Example, ...] = ()
    style: str = "few_shot"
    add_special_tokens: bool = True


def _shuffled_labels(demos: Sequence[Example], rng: np.random.Generator) -> tuple[Example, ...]:
    outputs = [d.output for d in demos]
    if len(set(outputs)) > 1:
        for _ in range(100):  # avoid the identity permutation when the labels allow it
            perm = rng.permutation(len(demos))
            if any(outputs[p] != outputs[i] for i, p in enumerate(perm)):
                break
    else:
        perm = np.arange(len(demos))
    return tuple(Example(d.input, outputs[p]) for d, p in zip(demos, perm))


def make_prompt(
    query: Example,
    *,
    style: PromptStyle = "few_shot",
    demos: Sequence[Example] = (),
    template: PromptTemplate = DEFAULT_TEMPLATE,
    instruction: str | None = None,
    tokenizer: Any = None,
    rng: np.random.Generator | None = None,
) -> Prompt:
    """Write one prompt.

    Args:
        query: the example asked at the end.
        style: one of `PROMPT_STYLES`.
        demos: demonstrations for ``few_shot``/``shuffled`` (and optional chat turns).
        template: the `PromptTemplate`.
        instruction: needed by ``instruction``; optional for ``chat``.
        tokenizer: needed by ``chat`` (its chat template).
        rng: needed by ``shuffled``.
    """
    check_choice("style", style, PromptStyle)
    answer = template.answer.format(output=query.output)
    q = template.query.format(input=query.input)
    if style == "zero_shot":
        return Prompt(q, answer, query, (), style)
    if style == "instruction":
        if not instruction:
            raise TaskError("the instruction style needs an instruction: pass instruction=... "
                            "(built-in tasks have one)")
        return Prompt(template.instruction.format(instruction=instruction) + q, answer, query, (), style)
    if style in ("few_shot", "shuffled"):
        if not demos:
            raise InputError(f"the {style} style needs demonstrations")
        shown = tuple(demos)
        if style == "shuffled":
            if rng is None:
                raise InputError("the shuffled style needs rng=np.random.default_rng(seed)")
            shown = _shuffled_labels(shown, rng)
        return Prompt("".join(template.demo(d) for d in shown) + q, answer, query, shown, style)
    # chat
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise TaskError("the chat style needs a tokenizer with a chat template; this tokenizer has none. "
                        "Use --style few_shot or instruction")
    def user(x: str) -> str:
        return f"{instruction}\n\n{x}" if instruction else x
    messages: list[dict[str, str]] = []
    for d in demos:
        messages += [{"role": "user", "content": user(d.input)}, {"role": "assistant", "content": d.output}]
    messages.append({"role": "user", "content": user(query.input)})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return Prompt(text, query.output, query, tuple(demos), style, add_special_tokens=False)


def sample_prompts(
    queries: Sequence[Example],
    *,
    style: PromptStyle = "few_shot",
    demo_pool: Sequence[Example] = (),
    shots: int = 10,
    n: int | None = None,
    seed: int = 0,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    instruction: str | None = None,
    tokenizer: Any = None,
    stream: int = 0,
) -> list[Prompt]:
    """Build prompts for ``queries`` (the first ``n`` of a seeded shuffle), each with ``shots``
    demonstrations drawn from ``demo_pool`` without the query itself.

    The same arguments give the same prompts. ``stream`` separates independent random streams
    drawn with the same seed (for example the mean-activation prompts and the corrupted ones).
    """
    rng = np.random.default_rng([seed, 0x1F, stream])
    order = rng.permutation(len(queries))
    if n is not None:
        order = order[:n]
    needs_demos = style in ("few_shot", "shuffled") or (style == "chat" and shots > 0 and demo_pool)
    if style in ("few_shot", "shuffled") and len(demo_pool) < shots + 1:
        raise TaskError(f"{shots}-shot prompts need at least {shots + 1} training examples; "
                        f"the pool has {len(demo_pool)}. Lower --shots or use a larger task file")
    out = []
    for i in order:
        q = queries[int(i)]
        demos: list[Example] = []
        if needs_demos:
            pick = rng.choice(len(demo_pool), size=min(shots + 1, len(demo_pool)), replace=False)
            demos = [demo_pool[int(j)] for j in pick if demo_pool[int(j)] != q][:shots]
        out.append(make_prompt(q, style=style, demos=demos, template=template, instruction=instruction,
                               tokenizer=tokenizer, rng=rng))
    return out


# --------------------------------------------------------------------------------------------
# Tokenisation of prompts and answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EncodedPrompts:
    """Prompts with their token ids and their answers' tokens.

    Attributes:
        prompts: the kept prompts.
        input_ids: per prompt, its token ids (BOS included where the tokenizer adds one).
        answer_ids: per prompt, the token ids of the full answer as it follows the prompt.
        first_token: ``(n,)`` the first answer token of each prompt; what the metrics score.
        dropped: prompts whose answer has no usable first token, with the reason.
    """

    prompts: list[Prompt]
    input_ids: list[list[int]]
    answer_ids: list[list[int]]
    first_token: torch.Tensor
    dropped: list[tuple[Prompt, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: Iterable[int]) -> "EncodedPrompts":
        idx = list(idx)
        return EncodedPrompts([self.prompts[i] for i in idx], [self.input_ids[i] for i in idx],
                              [self.answer_ids[i] for i in idx], self.first_token[idx].clone(), [])

    @staticmethod
    def concat(parts: Sequence["EncodedPrompts"]) -> "EncodedPrompts":
        return EncodedPrompts([p for e in parts for p in e.prompts], [x for e in parts for x in e.input_ids],
                              [a for e in parts for a in e.answer_ids],
                              torch.cat([e.first_token for e in parts]), [d for e in parts for d in e.dropped])


def _answer_tokens(model: Any, prompt: Prompt) -> tuple[list[int], list[int]]:
    tokenizer = model.tokenizer

    def enc(s: str) -> list[int]:
        return model.encode(s, add_special_tokens=prompt.add_special_tokens)

    p_ids = enc(prompt.text)
    full = enc(prompt.text + prompt.answer)
    if full[: len(p_ids)] == p_ids:
        return p_ids, full[len(p_ids):]
    # The answer merged with the end of the prompt; tokenise it on its own.
    return p_ids, list(tokenizer(prompt.answer, add_special_tokens=False)["input_ids"])


def answer_problem(tokenizer: Any, answer_ids: Sequence[int], answer: str) -> str | None:
    """Why ``answer_ids`` can't be scored by its first token, or None if it can."""
    if not answer.strip():
        return "the answer is empty"
    if not answer_ids:
        return "the answer produced no tokens"
    first = tokenizer.decode([answer_ids[0]])
    if not first.strip():
        return (f"its first token {tokenizer.convert_ids_to_tokens(answer_ids[0])!r} is only whitespace, "
                f"shared by every answer that starts the same way")
    return None


def encode_prompts(model: Any, prompts: Sequence[Prompt], *, on_bad: str = "drop",
                   log_dropped: bool = True) -> EncodedPrompts:
    """Tokenise prompts and find each answer's first token.

    Args:
        model: an `IVModel` (its ``encode`` decides BOS handling).
        prompts: the prompts.
        on_bad: ``"drop"`` logs a warning naming every prompt whose answer has no usable first
            token and keeps them in ``dropped``; ``"raise"`` raises on the first one.

    Raises:
        AnswerTokenError: with ``on_bad="raise"``, or when every prompt is unusable.
    """
    tok = model.tokenizer
    kept, ids, ans, dropped = [], [], [], []
    for pr in prompts:
        p_ids, a_ids = _answer_tokens(model, pr)
        problem = answer_problem(tok, a_ids, pr.answer)
        if problem:
            msg = f"answer {pr.answer!r} to {pr.query.input!r}: {problem}"
            if on_bad == "raise":
                raise AnswerTokenError(msg + "; change the answer template (e.g. drop the leading space) "
                                       "or remove the example")
            dropped.append((pr, problem))
            continue
        kept.append(pr)
        ids.append(p_ids)
        ans.append(a_ids)
    if dropped and log_dropped:
        shown = "; ".join(f"{p.query.input!r} -> {p.answer!r}" for p, _ in dropped[:5])
        log.warning("dropped %d of %d prompts whose answer has no usable first token (%s%s): %s",
                    len(dropped), len(prompts), shown, " ..." if len(dropped) > 5 else "", dropped[0][1])
    if prompts and not kept:
        raise AnswerTokenError(
            f"none of the {len(prompts)} answers has a usable first token ({dropped[0][1]}); change the "
            f"answer template (e.g. PromptTemplate(answer='{{output}}')) or the task's outputs"
        )
    first = torch.tensor([a[0] for a in ans], dtype=torch.long)
    return EncodedPrompts(kept, ids, ans, first, dropped)


def prompts_to_json(prompts: Sequence[Prompt]) -> list[dict[str, Any]]:
    """Prompts as plain JSON-able dicts (to re-tokenise them later for another checkpoint)."""
    return [{"text": p.text, "answer": p.answer, "query": [p.query.input, p.query.output],
             "demos": [[d.input, d.output] for d in p.demos], "style": p.style,
             "add_special_tokens": p.add_special_tokens} for p in prompts]


def prompts_from_json(records: Sequence[dict[str, Any]]) -> list[Prompt]:
    """Inverse of `prompts_to_json`."""
    return [Prompt(r["text"], r["answer"], Example(*r["query"]), tuple(Example(*d) for d in r["demos"]),
                   r["style"], bool(r["add_special_tokens"])) for r in records]
