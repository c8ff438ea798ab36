"""The in-context-versus-instruction probe of Kotha et al.: does the model keep doing the task its
two demonstrations show when the last query reads like an instruction?

Concepts
--------
* **A probe item** (`ProbeItem`): two demonstrations of an in-context task and a last
  query that is an instruction: an arithmetic question (``What is 7 plus 5?``) or a
  fill-in-the-blank (``The capital of France is ___.``). The **in-context
  answer** is the task applied to the query (for ``repeat``, the query itself); the
  **instruction answer** is what following the instruction gives (``12``, ``Paris``).
* **Built-in in-context tasks** (`IN_CONTEXT_TASKS`): ``repeat`` the input, ``uppercase``
  (capitalise every letter) and ``lowercase`` (every letter in lower case). `build_probe`
  writes ``n`` items per task from a seed; your own items come from a JSON/JSONL file
  (`load_probe_file`).
* **A prompt** is the item with a transform ``s`` applied to every text field (demonstration
  inputs and outputs, query, answers), written ``Q: {s(x)}\\nA: {s(y)}\\n\\n...Q: {s(query)}\\nA:``
  (the ``Q:``/``A:`` scaffold is not transformed). The in-context answer becomes ``s(answer)``.
  For a built-in task the probe checks that ``s`` commutes with it on every field, so the
  transformed prompt asks for the same task (``s(task(x)) == task(s(x))``); for an invertible
  ``s`` it checks ``s^-1(s(field)) == field``.
* **Decoding**: greedy, ``max_new_tokens=10`` new tokens, through
  `ivkit.evaluation.generate_ids` (``engine="generate_ids"``, the default), or through the
  model's own KV-cached ``generate`` under `ivkit.InstructionVector.apply`
  (``engine="cached"``: the same tokens up to float rounding, several times faster on CPU because
  ``generate_ids`` re-runs the whole sequence for every new token; `engine_agreement`
  measures the agreement). The text is cut at the first EOS token, then at the first newline.

Scoring (`score_output`), exactly
---------------------------------------
Let ``o`` be the decoded output with leading whitespace removed, ``a`` the transformed
in-context answer, and ``a'`` the same without its final punctuation marks (``.``, ``?``, ``!``).
The outcome is, in this order:

1. ``in_context`` if ``o`` starts with ``a'`` (character by character, case-sensitive); or if all
   10 tokens were used without reaching a newline or EOS (the budget cut the answer short),
   ``o`` is not empty and ``a`` starts with ``o``;
2. ``instruction`` if one of the instruction answers (each as given and transformed by ``s``)
   occurs in ``o`` as a whole word, case-insensitively;
3. ``neither`` otherwise.

The final mark is left out because the demonstrations end with a full stop and a model that
copies a question often ends it with one too (``What is 16 plus 2.``); whether ``o`` starts with
the whole answer, mark included, is kept as well (``exact``). The second half of rule 1 matters
for Leetspeak, whose answers can take more than 10 tokens; how often it applied is reported
(``truncated``). Records keep the raw output, so stored runs are scored again by the rule of the
code that reads them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..core.io import progress_bar
from ..core.options import check_at_least, check_choice, choices
from ..core.prompts import Prompt, make_prompt
from ..core.tasks import Example, load_task
from ..evaluation.generation import generate_ids
from ..models.model import IVModel
from ..vectors import InstructionVector
from .files import RecordFileError, read_records
from .transforms import Transform, TransformError

log = logging.getLogger(__name__)

#: the built-in in-context tasks: name -> the function the demonstrations show
IN_CONTEXT_TASKS: dict[str, Callable[[str], str]] = {"repeat": lambda x: x, "uppercase": str.upper,
                                                     "lowercase": str.lower}
ProbeTaskName = Literal["repeat", "uppercase", "lowercase"]
Outcome = Literal["in_context", "instruction", "neither"]
OUTCOMES: tuple[str, ...] = choices(Outcome)
QueryKind = Literal["arithmetic", "fill_blank", "both"]
#: how the probe decodes: ivkit's generate_ids (the reference) or the model's KV-cached generate
Engine = Literal["generate_ids", "cached"]
DEFAULT_TASKS: tuple[str, ...] = choices(ProbeTaskName)


@dataclass(frozen=True)
class ProbeItem:
    """One probe prompt before any transform.

    Attributes:
        task: the in-context task (a built-in name, or the file's own).
        index: the item's number within its task (prompts are paired across models and
            transforms by ``(task, index)``).
        kind: ``arithmetic``, ``fill_blank`` or the file's own label.
        demos: the demonstrations, ``(input, output)`` pairs.
        query: the last input, an instruction.
        answer: the in-context answer.
        instruction_answers: what following the instruction gives (any one counts).
    """

    task: str
    index: int
    kind: str
    demos: tuple[tuple[str, str], ...]
    query: str
    answer: str
    instruction_answers: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Building the items
# --------------------------------------------------------------------------------------------

_OPS = (("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b))


def _arithmetic(rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    while True:
        name, fn = _OPS[int(rng.integers(len(_OPS)))]
        hi = 10 if name == "times" else 20
        a, b = int(rng.integers(2, hi)), int(rng.integers(2, hi))
        if name == "minus" and a <= b:
            a, b = b, a
        r = fn(a, b)
        if a != b and r not in (a, b):  # the answer never appears in the question
            return f"What is {a} {name} {b}?", (str(r),)


def _fill_blank(rng: np.random.Generator, pools: dict[str, list[Example]]) -> tuple[str, tuple[str, ...]]:
    while True:
        which = "country-capital" if rng.random() < 0.5 else "antonym"
        ex = pools[which][int(rng.integers(len(pools[which])))]
        frame = "The capital of {} is ___." if which == "country-capital" else "The opposite of {} is ___."
        query = frame.format(ex.input)
        if not re.search(rf"(?<!\w){re.escape(ex.output.lower())}(?!\w)", query.lower()):
            return query, (ex.output,)


def demo_words() -> list[str]:
    """The words demonstrations are made of: lower-case words of 3 to 8 letters that both
    built-in lexicons (English-French and English-German) have, so translated demonstrations
    are fully covered."""
    fr = {e.input for e in load_task("english-french").examples}
    de = {e.input for e in load_task("english-german").examples}
    return sorted(w for w in fr & de if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 8)


def demo_input(rng: np.random.Generator, words: Sequence[str]) -> str:
    """A demonstration input: 2 to 4 random words, the first capitalised, ending with a full stop."""
    pick = [words[int(i)] for i in rng.choice(len(words), size=int(rng.integers(2, 5)), replace=False)]
    return " ".join([pick[0].capitalize(), *pick[1:]]) + "."


def make_queries(n: int, seed: int = 0, kinds: QueryKind = "both") -> list[tuple[str, str, tuple[str, ...]]]:
    """``n`` instruction-like queries ``(kind, query, instruction_answers)`` from a seed:
    arithmetic questions and fill-in-the-blanks (country capitals and antonyms from the built-in
    tasks), alternating with ``kinds="both"``."""
    check_choice("kinds", kinds, QueryKind)
    rng = np.random.default_rng([seed, 0xC0])
    pools = {t: load_task(t).examples for t in ("country-capital", "antonym")}
    out = []
    for i in range(n):
        kind = kinds if kinds != "both" else ("arithmetic" if i % 2 == 0 else "fill_blank")
        q, ans = _arithmetic(rng) if kind == "arithmetic" else _fill_blank(rng, pools)
        out.append((kind, q, ans))
    return out


def build_probe(tasks: Sequence[str] = DEFAULT_TASKS, n: int = 100, seed: int = 0, *,
                kinds: QueryKind = "both", shots: int = 2) -> list[ProbeItem]:
    """``n`` items per built-in task, from ``seed``. Every task gets the same queries (so tasks
    are paired too); the demonstrations are drawn per task and item."""
    n, shots = check_at_least("n", n, 1), check_at_least("shots", shots, 1)
    for t in tasks:
        check_choice("task", t, ProbeTaskName)
    queries = make_queries(n, seed, kinds)
    words = demo_words()
    items = []
    for ti, task in enumerate(tasks):
        f = IN_CONTEXT_TASKS[task]
        rng = np.random.default_rng([seed, 0xD3, ti])
        for i, (kind, q, ans) in enumerate(queries):
            demos = tuple((x, f(x)) for x in (demo_input(rng, words) for _ in range(shots)))
            items.append(ProbeItem(task, i, kind, demos, q, f(q), ans))
    return items


# --------------------------------------------------------------------------------------------
# Users' probe files
# --------------------------------------------------------------------------------------------

_KEYS = {"task", "demos", "query", "answer", "instruction_answer", "kind"}


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _demos(rec: dict, f: Callable[[str], str] | None, where: str) -> tuple[tuple[str, str], ...]:
    demos = rec.get("demos")
    if not isinstance(demos, list) or not demos:
        raise RecordFileError(f"{where}: \"demos\" must be a non-empty list of [input, output] pairs")
    out = []
    for d in demos:
        if isinstance(d, dict) and _text(d.get("input")) and _text(d.get("output")):
            out.append((d["input"], d["output"]))
        elif isinstance(d, list) and len(d) == 2 and _text(d[0]) and _text(d[1]):
            out.append((d[0], d[1]))
        elif _text(d) and f is not None:  # a bare input: the built-in task writes the output
            out.append((d, f(d)))
        else:
            need = "an [input, output] pair" + (" or an input" if f is not None else "")
            raise RecordFileError(f"{where}: demonstration {d!r} must be {need}")
    return tuple(out)


def _item(rec: Any, counts: dict[str, int], where: str) -> ProbeItem:
    if not isinstance(rec, dict):
        raise RecordFileError(f"{where}: each probe item must be an object with \"demos\" and \"query\", "
                              f"got {type(rec).__name__}")
    unknown = sorted(set(rec) - _KEYS)
    if unknown:
        raise RecordFileError(f"{where}: unknown key(s) {unknown}; a probe item has {sorted(_KEYS)}")
    task = rec.get("task", "custom")
    if not _text(task):
        raise RecordFileError(f"{where}: \"task\" must be a non-empty string")
    f = IN_CONTEXT_TASKS.get(task)
    if not _text(rec.get("query")):
        raise RecordFileError(f"{where}: the item has no \"query\" (the last input, an instruction)")
    query = rec["query"]
    if "answer" in rec and not _text(rec["answer"]):
        raise RecordFileError(f"{where}: \"answer\" must be a non-empty string")
    answer = rec.get("answer") or (f(query) if f is not None else None)
    if answer is None:
        raise RecordFileError(f"{where}: the query {query!r} has no in-context answer: add \"answer\" (what the "
                              f"demonstrations' task gives for it), or name a built-in task "
                              f"({', '.join(IN_CONTEXT_TASKS)}) as \"task\"")
    if f is not None and answer != f(query):
        raise RecordFileError(f"{where}: \"answer\" {answer!r} is not what task {task!r} gives for the query "
                              f"({f(query)!r}); drop \"answer\" or fix it")
    ia = rec.get("instruction_answer", [])
    ia = [ia] if isinstance(ia, str) else ia
    if not isinstance(ia, list) or not all(_text(a) for a in ia):
        raise RecordFileError(f"{where}: \"instruction_answer\" must be a string or a list of strings")
    index = counts.get(task, 0)
    counts[task] = index + 1
    return ProbeItem(task, index, str(rec.get("kind", "custom")), _demos(rec, f, where), query, answer, tuple(ia))


def load_probe_file(path: str | Path) -> list[ProbeItem]:
    """Your own probe items from a JSON list or JSONL file. Each item is an object:

        {"task": "repeat", "demos": [["The cat sleeps.", "The cat sleeps."], ...],
         "query": "What is 7 plus 5?", "instruction_answer": "12"}

    ``task`` (default ``custom``) names the in-context task; a built-in one (``repeat``,
    ``uppercase``, ``lowercase``) writes ``answer`` and the demonstrations' outputs itself
    (demos may then be bare inputs); any other task needs ``answer``, the in-context answer.
    ``instruction_answer`` (a string or a list) is optional; ``kind`` is a free label.

    Raises:
        RecordFileError: naming the file and line of the first bad item.
    """
    counts: dict[str, int] = {}
    items = [_item(rec, counts, f"{path}, line {line}") for line, rec in read_records(path, "probe")]
    if not items:
        raise RecordFileError(f"{path}: the probe file has no items")
    return items


# --------------------------------------------------------------------------------------------
# Prompts, scoring, running
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedItem:
    """An item under a transform: the prompt (``prompt.text``) and the transformed answers."""

    item: ProbeItem
    prompt: Prompt
    answer: str
    instruction_answers: tuple[str, ...]
    coverage: float | None
    same_task: bool | None


def _roundtrip(t: Transform, fields: Sequence[str]) -> None:
    for x in fields:
        if t.exact_on(x) and t.invert(t(x)) != x:
            raise TransformError(f"transform {t.name!r} claims its inverse undoes it, but s^-1(s({x!r})) = "
                                 f"{t.invert(t(x))!r}; fix the inverse or declare it invertible=False")


def render(item: ProbeItem, transform: Transform) -> RenderedItem:
    """The prompt of ``item`` under ``transform`` (see the module docstring)."""
    fields = [x for d in item.demos for x in d] + [item.query, item.answer]
    _roundtrip(transform, fields)
    s = transform
    demos = [Example(s(x), s(y)) for x, y in item.demos]
    prompt = make_prompt(Example(s(item.query), s(item.answer)), style="few_shot", demos=demos)
    f = IN_CONTEXT_TASKS.get(item.task)
    same = None if f is None else all(s(f(x)) == f(s(x)) for x in [d[0] for d in item.demos] + [item.query])
    cov = s.coverage(" ".join(fields))
    ia = tuple(dict.fromkeys([*item.instruction_answers, *(s(a) for a in item.instruction_answers)]))
    return RenderedItem(item, prompt, s(item.answer), ia, None if cov is None else cov.fraction, same)


def answer_core(answer: str) -> str:
    """The answer without leading/trailing whitespace and its final ``.``, ``?`` or ``!`` marks
    (the answer itself if nothing else is left)."""
    a = answer.strip()
    return a.rstrip(".?!").rstrip() or a


def exact_match(output: str, answer: str) -> bool:
    """Whether the output, leading whitespace removed, starts with the whole answer."""
    return output.lstrip().startswith(answer.strip())


def score_output(output: str, answer: str, instruction_answers: Sequence[str] = (), *,
                 exhausted: bool = False) -> Outcome:
    """The outcome of one output (see "Scoring" in the module docstring).

    Args:
        output: the decoded continuation (already cut at EOS and at the first newline).
        answer: the in-context answer, transformed like the prompt.
        instruction_answers: the instruction's answers (as given and transformed).
        exhausted: whether every new token was used without a newline or EOS.
    """
    o, a = output.lstrip(), answer.strip()
    if not a:
        raise InputError("score_output needs a non-empty in-context answer")
    if o.startswith(answer_core(a)) or (exhausted and o and a.startswith(o)):
        return "in_context"
    low = o.lower()
    for ans in instruction_answers:
        if ans.strip() and re.search(rf"(?<!\w){re.escape(ans.strip().lower())}(?!\w)", low):
            return "instruction"
    return "neither"


@dataclass(frozen=True)
class ProbeRecord:
    """One prompt's result.

    Attributes:
        task, index, kind: the item (see `ProbeItem`).
        answer: the transformed in-context answer.
        output: the decoded output (cut at EOS and at the first newline).
        back: ``s^-1(output)``, the output mapped back (best effort for a lossy transform).
        outcome: ``in_context``, ``instruction`` or ``neither``.
        truncated: counted in-context only because the token budget cut a matching output.
        coverage: the lexicon's word coverage of the item (translations only), else None.
        same_task: whether the transform commutes with the built-in task on this item.
        prompt_tokens: the prompt's length in tokens.
        new_ids: the generated token ids (all ``max_new_tokens``, before any cut).
        instruction_answers: the instruction's answers (as given and transformed).
        exhausted: every new token was used without a newline or EOS.
        exact: the output starts with the whole answer, final punctuation included.
    """

    task: str
    index: int
    kind: str
    answer: str
    output: str
    back: str
    outcome: str
    truncated: bool = False
    coverage: float | None = None
    same_task: bool | None = None
    prompt_tokens: int = 0
    new_ids: tuple[int, ...] = ()
    instruction_answers: tuple[str, ...] = ()
    exhausted: bool = False
    exact: bool = False

    def rescored(self) -> "ProbeRecord":
        """The record scored by `score_output` as the code now stands."""
        outcome = score_output(self.output, self.answer, self.instruction_answers, exhausted=self.exhausted)
        truncated = outcome == "in_context" and not self.output.lstrip().startswith(answer_core(self.answer))
        return dataclasses.replace(self, outcome=outcome, truncated=truncated,
                                   exact=exact_match(self.output, self.answer))


def decode_new(model: IVModel, ids: Sequence[int]) -> tuple[str, bool]:
    """The text of new token ids cut at EOS and at the first newline, and whether the budget was
    used up (no EOS and no newline among them)."""
    eos = getattr(model.tokenizer, "eos_token_id", None)
    ids = list(ids)
    hit_eos = eos is not None and eos in ids
    if hit_eos:
        ids = ids[:ids.index(eos)]
    text = model.tokenizer.decode(ids, skip_special_tokens=True)
    newline = "\n" in text
    return text.split("\n", 1)[0], not (hit_eos or newline)


def cached_generate_ids(model: IVModel, prompts: Sequence[Sequence[int]], *, iv: InstructionVector | None = None,
                        max_new_tokens: int = 10, batch_size: int = 16) -> list[list[int]]:
    """What `ivkit.evaluation.generate_ids` returns, through the model's own KV-cached
    ``generate`` under `ivkit.InstructionVector.apply` (the IV is added at the last prompt
    token and at each new token as it is processed; see `ivkit.evaluation.generation`).

    Greedy, exactly ``max_new_tokens`` tokens per prompt (no stop at EOS, no sampling settings
    from the model's generation config). Torch backend only. Several times faster on CPU, since
    each step runs one new token instead of the whole sequence; the tokens agree with
    ``generate_ids`` up to float rounding, which `engine_agreement` measures."""
    from contextlib import nullcontext

    from transformers import GenerationConfig

    if model.backend.name != "torch":
        raise InputError(f"the cached engine runs the model's own generate, on the torch backend only (this model "
                         f"runs on {model.backend.name}); use engine='generate_ids'")
    cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=None,
                           pad_token_id=model.pad_token_id)
    out: list[list[int]] = []
    own = getattr(model.model, "generation_config", None) or GenerationConfig()
    saved = own.eos_token_id
    own.eos_token_id = None  # else generate fills it in and stops rows there; generate_ids never stops
    try:
        for start in range(0, len(prompts), batch_size):
            batch = model.make_batch([list(p) for p in prompts[start:start + batch_size]])
            with (iv.apply(model) if iv is not None else nullcontext()), torch.inference_mode():
                g = model.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                         generation_config=cfg)
            out += g[:, batch.input_ids.shape[1]:].tolist()
    finally:
        own.eos_token_id = saved
    if any(len(o) != max_new_tokens for o in out):
        raise InputError(f"the model's generate stopped before {max_new_tokens} tokens; use engine='generate_ids'")
    return out


def _new_ids(model: IVModel, ids: list[list[int]], *, iv: InstructionVector | None, max_new_tokens: int,
             batch_size: int, engine: Engine, progress: bool, desc: str) -> list[list[int]]:
    """New token ids per prompt, in the given order (batched by similar length)."""
    check_choice("engine", engine, Engine)
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    new: list[list[int]] = [[] for _ in ids]
    step = max(batch_size * 4, 1)
    gen = generate_ids if engine == "generate_ids" else cached_generate_ids
    for start in progress_bar(range(0, len(order), step), desc=desc, progress=progress):
        chunk = order[start:start + step]
        outs = gen(model, [ids[i] for i in chunk], iv=iv, max_new_tokens=max_new_tokens, batch_size=batch_size)
        for i, o in zip(chunk, outs):
            new[i] = o
    return new


def run_items(model: IVModel, items: Sequence[ProbeItem], transform: Transform, *,
              iv: InstructionVector | None = None, max_new_tokens: int = 10, batch_size: int = 16,
              engine: Engine = "generate_ids", progress: bool = True) -> list[ProbeRecord]:
    """Generate (greedy, ``max_new_tokens``) and score every item under ``transform``, optionally
    with ``iv`` injected (its own layer and scale) at the last prompt token and every new one.
    ``engine``: ``generate_ids`` (`ivkit.evaluation.generate_ids`, the reference) or
    ``cached`` (`cached_generate_ids`, faster, torch backend)."""
    if not items:
        raise InputError("the probe has no items")
    rendered = [render(it, transform) for it in items]
    ids = [model.encode(r.prompt.text) for r in rendered]
    new = _new_ids(model, ids, iv=iv, max_new_tokens=max_new_tokens, batch_size=batch_size, engine=engine,
                   progress=progress, desc=f"probe {transform.name}")
    records = []
    for r, p_ids, n_ids in zip(rendered, ids, new):
        records.append(make_record(model, r, transform, n_ids, len(p_ids)))
    return records


def make_record(model: IVModel, r: RenderedItem, transform: Transform, new_ids: Sequence[int],
                prompt_tokens: int) -> ProbeRecord:
    """The scored record of one rendered item's new token ids."""
    text, exhausted = decode_new(model, new_ids)
    back = transform.invert(text) if transform.inverse is not None else text
    rec = ProbeRecord(r.item.task, r.item.index, r.item.kind, r.answer, text, back, "neither", False, r.coverage,
                      r.same_task, prompt_tokens, tuple(new_ids), r.instruction_answers, exhausted)
    return rec.rescored()


def engine_agreement(model: IVModel, items: Sequence[ProbeItem], transform: Transform, *,
                     iv: InstructionVector | None = None, max_new_tokens: int = 10, batch_size: int = 16
                     ) -> tuple[int, int]:
    """``(same, n)``: on how many of ``items`` the two engines give the same new tokens."""
    ids = [model.encode(render(it, transform).prompt.text) for it in items]
    kw = dict(iv=iv, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False, desc="check")
    a = _new_ids(model, ids, engine="generate_ids", **kw)
    b = _new_ids(model, ids, engine="cached", **kw)
    return sum(x == y for x, y in zip(a, b)), len(ids)


@dataclass(frozen=True)
class ProbeRun:
    """One model on every item under one transform (the unit the study stores and resumes).

    Attributes:
        model: the model's label (``base``/``tuned`` or its name).
        transform: the transform's name.
        records: one `ProbeRecord` per item.
        seconds: the time generation and scoring took.
        condition: ``plain``, or what was injected (``iv``, ``iv_random``).
        engine: how it was decoded (``generate_ids`` or ``cached``).
    """

    model: str
    transform: str
    records: tuple[ProbeRecord, ...]
    seconds: float = 0.0
    condition: str = "plain"
    engine: str = "generate_ids"

    def rate(self, outcome: Outcome = "in_context", task: str | None = None) -> tuple[int, int]:
        """``(count, n)`` of ``outcome`` over the records (of ``task``, if given)."""
        rs = [r for r in self.records if task is None or r.task == task]
        return sum(r.outcome == outcome for r in rs), len(rs)

    def to_pandas(self):
        """One row per record."""
        import pandas as pd

        return pd.DataFrame([{"model": self.model, "transform": self.transform, "condition": self.condition,
                              **r.__dict__} for r in self.records])

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "transform": self.transform, "seconds": self.seconds,
                "condition": self.condition, "engine": self.engine,
                "records": [{**r.__dict__, "new_ids": list(r.new_ids), "instruction_answers": list(r.instruction_answers)}
                            for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProbeRun":
        complete = all("exhausted" in r for r in d["records"])
        records = tuple(ProbeRecord(**{**r, "new_ids": tuple(r.get("new_ids", ())),
                                       "instruction_answers": tuple(r.get("instruction_answers", ()))})
                        for r in d["records"])
        if complete:  # scored again by the current rule (old files lack the fields: see runner.upgrade)
            records = tuple(r.rescored() for r in records)
        return cls(d["model"], d["transform"], records, float(d["seconds"]), d.get("condition", "plain"),
                   d.get("engine", "generate_ids"))

    def __repr__(self) -> str:
        k, n = self.rate()
        return (f"ProbeRun({self.model!r}, {self.transform!r}, {self.condition}: in-context {k}/{n}, "
                f"{self.seconds:.0f} s)")


def run_probe(model: IVModel, items: Sequence[ProbeItem], transform: Transform, *, label: str | None = None,
              iv: InstructionVector | None = None, condition: str | None = None, max_new_tokens: int = 10,
              batch_size: int = 16, engine: Engine = "generate_ids", progress: bool = True) -> ProbeRun:
    """`run_items` as a `ProbeRun` (timed, labelled)."""
    t0 = time.perf_counter()
    records = run_items(model, items, transform, iv=iv, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        engine=engine, progress=progress)
    cond = condition or ("plain" if iv is None else "iv")
    return ProbeRun(label or model.name, transform.name, tuple(records), time.perf_counter() - t0, cond, engine)
