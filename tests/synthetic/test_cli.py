from typer.testing import CliRunner

from ivkit.synthetic.cli import app
from ivkit.synthetic.train import checkpoints

runner = CliRunner(env={"COLUMNS": "300"})


def test_help_lists_the_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("pretrain", "finetune", "study"):
        assert cmd in res.output


def test_bad_options_exit_2_before_any_work(tmp_path):
    res = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "x"), "--p-discrete", "1.5"])
    assert res.exit_code == 2 and "p_discrete" in res.output.replace("-", "_")
    res = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "x"), "--steps", "0"])
    assert res.exit_code == 2 and "--steps must be at least 1" in res.output
    res = runner.invoke(app, ["study", "--out", str(tmp_path / "y"), "--alphas", "2,x"])
    assert res.exit_code == 2 and "comma-separated numbers" in res.output
    res = runner.invoke(app, ["study", "--out", str(tmp_path / "y"), "--n-discrete", "0"])
    assert res.exit_code == 2 and "--n-discrete must be at least 1" in res.output
    res = runner.invoke(app, ["study", "--out", str(tmp_path / "y"), "--noise", "-1"])
    assert res.exit_code == 2 and "--noise is a standard deviation" in res.output
    res = runner.invoke(app, ["finetune", "--out", str(tmp_path / "z"), "--init", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "is not a folder" in res.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_pretrain_then_finetune(tmp_path):
    common = ["--dim", "2", "--n-points", "4", "--n-embd", "8", "--n-layer", "1", "--n-head", "2", "--batch-size", "4",
              "--points-steps", "0", "--dims-steps", "0", "-q"]
    res = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "pre"), "--steps", "2", "--save-every", "2", *common])
    assert res.exit_code == 0, res.output
    assert [p.name for p in checkpoints(tmp_path / "pre")] == ["checkpoint-2"]
    res = runner.invoke(app, ["finetune", "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "pre" / "checkpoint-2"),
                              "--steps", "2", "--save-every", "1", "--batch-size", "4", "-q"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in checkpoints(tmp_path / "ft")] == ["checkpoint-1", "checkpoint-2"]
