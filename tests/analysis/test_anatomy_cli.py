import json

import pytest
import torch
from typer.testing import CliRunner

from ivkit import InstructionVector
from ivkit.analysis.anatomy_cli import app

from .test_anatomy_decode import tiny_iv

runner = CliRunner()


@pytest.fixture()
def iv_dirs(tiny_llama, tmp_path):
    a = tiny_iv(tiny_llama, task="lowercase_first_letter").save(tmp_path / "a")
    b = tiny_iv(tiny_llama, heads=((1, 2),), task="capitalize").save(tmp_path / "b")
    return a, b


def test_decode_command_writes_tokens_lens_and_reconstruction(tiny_llama_dir, iv_dirs, tmp_path):
    out = tmp_path / "dec"
    r = runner.invoke(app, ["decode", str(tiny_llama_dir), "--iv", str(iv_dirs[0]), "--top", "4", "--task",
                            "capitalize", "--n", "6", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "decode.json").read_text())
    assert len(data["promoted"]) == 4 and data["lens"] and data["reconstruction"][-1]["n_tokens"] is None
    assert (out / "lens.html").exists() and (out / "reconstruction.csv").exists()
    assert "cdn.plot.ly" in (out / "decode.html").read_text()


def test_compose_command_saves_the_composed_iv(tiny_llama_dir, iv_dirs, tmp_path):
    out = tmp_path / "comp"
    r = runner.invoke(app, ["compose", str(tiny_llama_dir), "--iv", str(iv_dirs[0]), "--iv", str(iv_dirs[1]),
                            "--coef", "1", "--coef", "-0.5", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    back = InstructionVector.load(out)
    a, b = InstructionVector.load(iv_dirs[0]), InstructionVector.load(iv_dirs[1])
    assert torch.allclose(back.vector, a.vector - 0.5 * b.vector, atol=1e-6)
    assert back.meta["composition"]["formula"] == "lowercase_first_letter - 0.5*capitalize"
    assert back.meta["composition"]["terms"][0]["source"] == str(iv_dirs[0])


def test_commands_reject_bad_input_before_loading(iv_dirs, tmp_path):
    r = runner.invoke(app, ["compose", "no-such-model", "--iv", str(iv_dirs[0]), "--iv", str(iv_dirs[1]),
                            "--coef", "1", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "one --coef per --iv" in r.output
    r = runner.invoke(app, ["decode", "no-such-model", "--iv", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "iv.json" in r.output
    r = runner.invoke(app, ["instruction", "no-such-model", "capitalize", "--out", str(tmp_path / "i"),
                            "--corrupt", "shuffle"])
    assert r.exit_code == 2 and "corrupt" in r.output


def test_one_import_for_the_anatomy_api():
    from ivkit.analysis import anatomy

    assert all(hasattr(anatomy, name) for name in anatomy.__all__)
    assert {"decode_vector", "compose", "portability", "baseline_vectors", "instruction_iv"} <= set(anatomy.__all__)
