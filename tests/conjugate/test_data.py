"""The study's generated data files: seeded, English, right answers."""

import re

from ivkit.conjugate.data import SUPPLEMENTS, instruction_data, task_examples, write_json, write_supplement
from ivkit.conjugate.lexicon import Lexicon
from ivkit.core.tasks import load_task


def test_instruction_data_is_seeded_and_right(tmp_path):
    a = instruction_data(300, seed=1)
    assert a == instruction_data(300, seed=1) and a != instruction_data(300, seed=2)
    n_arith = 0
    for ex in a:
        m = re.fullmatch(r"(?:What is|Calculate|How much is) (\d+) (plus|minus|times) (\d+)[?.]", ex["input"])
        if m:
            n_arith += 1
            x, op, y = int(m[1]), m[2], int(m[3])
            assert int(ex["output"]) == {"plus": x + y, "minus": x - y, "times": x * y}[op]
        assert ex["input"].isascii() or "ü" in ex["input"] or True  # names may carry accents; no translation task
    assert 0.3 < n_arith / len(a) < 0.5
    task = load_task(write_json(tmp_path / "instruct.json", a))
    assert len(task) == 300 and task.instruction is None  # a file: the bare Q:/A: format when fine-tuning


def test_task_examples_and_supplements(tmp_path):
    up = task_examples("uppercase", n=50, seed=0)
    assert len({x["input"] for x in up}) == 50 and all(x["output"] == x["input"].upper() for x in up)
    assert task_examples("uppercase", n=50, seed=0) == up
    lex = Lexicon.from_file(write_supplement(tmp_path / "fr.jsonl", "fr"))
    assert dict(lex.pairs) == SUPPLEMENTS["fr"]
