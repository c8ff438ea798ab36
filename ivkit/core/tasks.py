"""Tasks and their seeded splits.

A **task** is a list of ``{"input", "output"}`` pairs, such as ``hot -> cold``. ivkit ships the
lexical tasks of the function-vectors repository (MIT licence, in ``ivkit/data/tasks``); any JSON
list or JSONL file of the same shape works too (`load_task`). Prompts are written from
tasks by `ivkit.core.prompts`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TaskError

log = logging.getLogger(__name__)

#: A one-line instruction per built-in task, for the ``instruction`` and ``chat`` styles.
TASK_INSTRUCTIONS: dict[str, str] = {
    "alphabetically_first_3": "Name the word that comes first in alphabetical order.",
    "animal_v_object_3": "Name the animal in the list.",
    "antonym": "Give the opposite of the word.",
    "capitalize": "Write the word with its first letter capitalized.",
    "capitalize_first_letter": "Give the first letter of the word as a capital letter.",
    "capitalize_last_letter": "Give the last letter of the word as a capital letter.",
    "choose_first_of_3": "Repeat the first item of the list.",
    "choose_last_of_3": "Repeat the last item of the list.",
    "choose_middle_of_3": "Repeat the middle item of the list.",
    "color_v_animal_3": "Name the color in the list.",
    "country-capital": "Give the capital city of the country.",
    "country-currency": "Give the currency of the country.",
    "english-french": "Translate the word into French.",
    "english-german": "Translate the word into German.",
    "landmark-country": "Name the country where this place is.",
    "lowercase_first_letter": "Give the first letter of the word in lowercase.",
    "next_item": "Give the item that comes next in the sequence.",
    "person-occupation": "Give the occupation of the person.",
    "person-sport": "Name the sport the person plays.",
    "prev_item": "Give the item that comes before in the sequence.",
    "product-company": "Name the company that makes the product.",
    "synonym": "Give a word with the same meaning.",
}


# --------------------------------------------------------------------------------------------
# Tasks and splits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One input/output pair of a task."""

    input: str
    output: str


@dataclass(frozen=True)
class TaskSplit:
    """Seeded train/valid/test split of a task.

    Demonstrations and extraction queries come from ``train``; the injection layer is chosen on
    ``valid``; reported accuracies use ``test``.
    """

    train: list[Example]
    valid: list[Example]
    test: list[Example]
    seed: int

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


@dataclass(frozen=True)
class Task:
    """A named list of examples, with an optional instruction.

    Attributes:
        name: the built-in name or the file's stem.
        examples: the pairs, in file order.
        instruction: the instruction used by the ``instruction`` and ``chat`` styles.
        source: where the examples came from.
    """

    name: str
    examples: list[Example]
    instruction: str | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    def split(self, seed: int = 0, train_frac: float = 0.7, test_frac_of_rest: float = 0.7) -> TaskSplit:
        """Split seeded: ``train_frac`` for train; the rest splits ``test_frac_of_rest`` into test
        and the remainder into valid (70% / 21% / 9% by default, as in the function-vectors code).
        """
        n = len(self.examples)
        order = np.random.default_rng([seed, 0x5B1]).permutation(n)
        n_train = int(round(train_frac * n))
        n_test = int(round(test_frac_of_rest * (n - n_train)))
        pick = [self.examples[i] for i in order]
        split = TaskSplit(pick[:n_train], pick[n_train + n_test:], pick[n_train:n_train + n_test], seed)
        if min(len(split.train), len(split.valid), len(split.test)) == 0:
            raise TaskError(
                f"task {self.name!r} has {n} examples, too few to split into non-empty "
                f"train/valid/test ({split.sizes()}); use a file with at least 10 examples"
            )
        return split


def _builtin_dir() -> Path:
    return Path(str(resources.files("ivkit") / "data" / "tasks"))


def list_tasks() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(p.stem for p in _builtin_dir().glob("*.json"))


def _parse_examples(records: Any, source: str) -> list[Example]:
    if not isinstance(records, list):
        raise TaskError(
            f"{source}: expected a JSON list of {{\"input\": ..., \"output\": ...}} objects, "
            f"got {type(records).__name__}"
        )
    if not records:
        raise TaskError(f"{source}: the task has no examples; add {{\"input\", \"output\"}} pairs")
    out: list[Example] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "input" not in rec or "output" not in rec:
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise TaskError(f"{source}: example {i} must be an object with \"input\" and \"output\" keys, got {keys}")
        x, y = rec["input"], rec["output"]
        for key, val in (("input", x), ("output", y)):
            if isinstance(val, bool) or not isinstance(val, (str, int, float)):
                raise TaskError(f"{source}: example {i} has a non-text {key} {val!r}; use strings")
        x, y = str(x), str(y)
        if not x.strip() or not y.strip():
            raise TaskError(f"{source}: example {i} has an empty {'input' if not x.strip() else 'output'}; "
                            f"remove it or fill it in")
        out.append(Example(x, y))
    return out


def load_task(name_or_path: str | Path | Task, *, instruction: str | None = None) -> Task:
    """Load a built-in task by name, or a user file.

    Args:
        name_or_path: a built-in name (see `list_tasks`), a ``.json`` file holding a list of
            ``{"input", "output"}`` objects, or a ``.jsonl`` file with one such object per line.
            A `Task` is returned unchanged.
        instruction: the instruction for the ``instruction``/``chat`` styles; defaults to the
            built-in one (`TASK_INSTRUCTIONS`), if any.

    Raises:
        TaskError: unknown name, missing file, invalid JSON, wrong shape, or no examples.
    """
    if isinstance(name_or_path, Task):
        return name_or_path if instruction is None else replace(name_or_path, instruction=instruction)
    ref = str(name_or_path)
    path = Path(ref).expanduser()
    if ref in list_tasks() and not path.is_file():  # a bare name is the built-in, even beside a folder of that name
        path = _builtin_dir() / f"{ref}.json"
        name = ref
    elif path.exists():
        name = path.stem
    else:
        close = [t for t in list_tasks() if ref.lower().replace("_", "-") in t.replace("_", "-")]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TaskError(
            f"no built-in task or file named {ref!r}.{hint} Built-in tasks: {', '.join(list_tasks())}; "
            f"or pass a path to a .json/.jsonl file of {{\"input\", \"output\"}} pairs"
        )
    if path.is_dir():
        raise TaskError(f"{path} is a directory; pass a .json or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 JSON") from None
    if not text.strip():
        raise TaskError(f"{path}: the file is empty; it must hold {{\"input\", \"output\"}} pairs")
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}: invalid JSON at line {n}, column {e.colno}: {e.msg}") from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    examples = _parse_examples(records, str(path))
    return Task(name=name, examples=examples, instruction=instruction or TASK_INSTRUCTIONS.get(name),
                source=str(path))
