"""Data files the conjugate study writes from code, each seeded.

* `instruction_data`: English instruction-style ``{input, output}`` pairs to fine-tune a
  base model into its "tuned" partner: arithmetic questions with their answers, fill-in-the-blanks
  and questions built from the built-in tasks (capitals, currencies, antonyms, occupations, ...).
  No translation task is used, so the data stay English.
* `task_examples`: a task file of a probe's in-context task (``repeat``, ``uppercase``,
  ``lowercase``) on inputs like the probe's demonstrations, to extract its IV from.
* `SUPPLEMENTS`: a few function words the built-in lexicons lack (``is``, ``of``,
  ``plus``, ...), so that the probe's queries translate better; written as user lexicon files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_write_json
from ..core.options import check_at_least, check_choice
from ..core.tasks import load_task
from .probe import IN_CONTEXT_TASKS, ProbeTaskName, demo_input, demo_words

#: built-in task -> how its input becomes an English instruction or question
QUESTION_FRAMES: dict[str, tuple[str, ...]] = {
    "country-capital": ("What is the capital of {}?", "Fill in the blank: The capital of {} is ___.",
                        "The capital of {} is ___."),
    "country-currency": ("What is the currency of {}?", "Fill in the blank: The currency of {} is the ___."),
    "antonym": ("What is the opposite of {}?", "Fill in the blank: The opposite of {} is ___.",
                "The opposite of {} is ___."),
    "synonym": ("Give a word that means the same as {}.",),
    "landmark-country": ("In which country is {}?",),
    "person-occupation": ("What is the occupation of {}?",),
    "product-company": ("Which company makes the {}?",),
    "capitalize_first_letter": ("What is the first letter of {}, as a capital letter?",),
}

_OPS = (("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b))


def _arithmetic(rng: np.random.Generator) -> dict[str, str]:
    name, fn = _OPS[int(rng.integers(len(_OPS)))]
    hi = 13 if name == "times" else 50
    a, b = int(rng.integers(1, hi)), int(rng.integers(1, hi))
    if name == "minus" and a < b:
        a, b = b, a
    frame = ("What is {} {} {}?", "Calculate {} {} {}.", "How much is {} {} {}?")[int(rng.integers(3))]
    return {"input": frame.format(a, name, b), "output": str(fn(a, b))}


def instruction_data(n: int = 600, seed: int = 0, arithmetic_share: float = 0.4) -> list[dict[str, str]]:
    """``n`` English instruction/answer pairs from ``seed``: ``arithmetic_share`` of them
    arithmetic questions, the rest questions and fill-in-the-blanks on built-in tasks
    (`QUESTION_FRAMES`)."""
    n = check_at_least("n", n, 1)
    rng = np.random.default_rng([seed, 0xF1])
    pools = {t: load_task(t).examples for t in QUESTION_FRAMES}
    names = sorted(pools)
    out = []
    for _ in range(n):
        if rng.random() < arithmetic_share:
            out.append(_arithmetic(rng))
            continue
        t = names[int(rng.integers(len(names)))]
        ex = pools[t][int(rng.integers(len(pools[t])))]
        frames = QUESTION_FRAMES[t]
        out.append({"input": frames[int(rng.integers(len(frames)))].format(ex.input), "output": ex.output})
    return out


def task_examples(task: ProbeTaskName, n: int = 300, seed: int = 0) -> list[dict[str, str]]:
    """``n`` ``{input, output}`` pairs of a probe's in-context task, with inputs drawn like the
    probe's demonstrations (2 to 4 words, first capitalised, a full stop), all different."""
    check_choice("task", task, ProbeTaskName)
    n = check_at_least("n", n, 1)
    rng = np.random.default_rng([seed, 0x7A5])
    words = demo_words()
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(demo_input(rng, words))
    f = IN_CONTEXT_TASKS[task]
    return [{"input": x, "output": f(x)} for x in seen]


#: words the built-in lexicons lack that the probe's queries use (written by hand for this study)
SUPPLEMENTS: dict[str, dict[str, str]] = {
    "fr": {"is": "est", "of": "de", "plus": "plus", "minus": "moins", "in": "dans", "capital": "capitale",
           "a": "un", "to": "à", "an": "un", "be": "être", "her": "elle"},
    "de": {"is": "ist", "of": "von", "plus": "plus", "minus": "minus", "in": "in", "sum": "Summe", "a": "ein",
           "to": "zu", "an": "ein", "be": "sein"},
}


def write_json(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write records as a JSON list, atomically; returns the path."""
    atomic_write_json(Path(path), records)
    return Path(path)


def write_supplement(path: str | Path, lang: str) -> Path:
    """`SUPPLEMENTS` ``[lang]`` as a JSONL lexicon file (one ``{input, output}`` per line)."""
    import json

    from ..core.io import atomic_write_text

    lines = [json.dumps({"input": k, "output": v}, ensure_ascii=False) for k, v in SUPPLEMENTS[lang].items()]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)
