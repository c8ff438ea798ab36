"""The conjugate command: every option checked before a model loads; a tiny run writes its files."""

import json
import re

import pytest
from typer.testing import CliRunner

from ivkit.conjugate.cli import app

runner = CliRunner(env={"COLUMNS": "500", "TERMINAL_WIDTH": "500"})
NO_MODEL = "no/such/model-dir"  # loading it would fail: the errors below must come first


def _flat(text: str) -> str:
    """The output without rich's box drawing, on one line."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("args, match", [
    (["--transforms", "none,leetspeak"], "did you mean 'leet'"),
    (["--transforms", "none,fr", "--lexicon", "fr"], "NAME=FILE"),
    (["--probe", "repeat,shout"], "unknown task 'shout'"),
    (["--n", "0"], "n must be at least 1"),
    (["--engine", "fast"], "unknown engine 'fast'"),
    (["--iv-task", "repeat"], "give TUNED too"),
])
def test_bad_options_fail_before_any_model_loads(tmp_path, args, match):
    res = runner.invoke(app, [NO_MODEL, "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2, res.output
    assert match in _flat(res.output)
    assert not (tmp_path / "o").exists()


def test_bad_files_name_file_and_line(tmp_path):
    probe = tmp_path / "p.jsonl"
    probe.write_text('{"task": "repeat", "demos": ["a"], "query": "Q?"}\n{"demos": [["a", "b"]], "query": "Q?"}\n')
    res = runner.invoke(app, [NO_MODEL, "--out", str(tmp_path / "o"), "--probe", str(probe)])
    assert res.exit_code == 2 and "p.jsonl, line 2" in _flat(res.output)
    lex = tmp_path / "l.jsonl"
    lex.write_text('{"input": "cat", "output": "chat"}\n{"input": "cat", "output": "matou"}\n')
    res = runner.invoke(app, [NO_MODEL, "--out", str(tmp_path / "o"), "--transforms", "none,es",
                              "--lexicon", f"es={lex}"])
    assert res.exit_code == 2 and "l.jsonl, line 2: duplicate key" in _flat(res.output)


def test_a_tiny_run_writes_tables_and_figure_and_resumes(tiny_llama_dir, tmp_path):
    out = tmp_path / "o"
    args = [str(tiny_llama_dir), str(tiny_llama_dir), "--out", str(out), "--probe", "repeat", "--n", "3",
            "--transforms", "none,piglatin", "--max-new-tokens", "2", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "ConjugateResult(base vs tuned" in res.output
    for f in ("rates.csv", "recovery.csv", "result.json", "in_context.html"):
        assert (out / f).exists(), f
    assert "cdn.plot.ly" in (out / "in_context.html").read_text()
    stored = sorted(p.name for p in (out / "runs").iterdir())
    assert len(stored) == 4 and stored[0].startswith("base__none__plain__")
    first = json.loads((out / "result.json").read_text())
    assert runner.invoke(app, args).exit_code == 0  # the rerun loads the four runs
    assert json.loads((out / "result.json").read_text()) == first
