import json

import pytest
import torch

from ivkit.core.errors import ArtifactError, InputError
from ivkit.synthetic.data import RegressionTask, sample_prompts
from ivkit.synthetic.measure import eval_prompts, mean_interval, predict
from ivkit.synthetic.model import ModelConfig
from ivkit.synthetic.train import TrainConfig, checkpoints, finetune, load_checkpoint, pretrain, read_state, train

TASK = RegressionTask(dim=2, n_points=6)
MODEL = ModelConfig(dim=2, n_points=6, n_embd=16, n_layer=1, n_head=2)


def _weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_a_tiny_pretraining_run_beats_the_zero_predictor(tmp_path):
    task = RegressionTask(dim=1, n_points=4)
    model = ModelConfig(dim=1, n_points=4, n_embd=32, n_layer=2, n_head=2)
    cfg = TrainConfig(steps=200, batch_size=64, lr=3e-3, warmup=10, points_steps=0, dims_steps=0, save_every=200)
    run = pretrain(tmp_path / "pre", task, model, cfg, progress=False)
    p = eval_prompts(task, 2000, "mixture")
    per_prompt = (((predict(run.load(), p) - p.ys) ** 2) - p.ys**2)[:, 1:].mean(1).double().numpy()
    diff, lo, hi = mean_interval(per_prompt)  # model minus zero predictor, paired over prompts
    assert hi < 0 and diff < -0.1, (diff, lo, hi)
    assert run.to_pandas()["loss"].iloc[-20:].mean() < run.to_pandas()["loss"].iloc[:20].mean()


def test_resuming_gives_the_weights_of_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=8, lr=1e-2, warmup=2, points_start=3, points_steps=4, dims_steps=3, save_every=3)
    whole = train(tmp_path / "a", "pretrain", TASK, MODEL, cfg, progress=False)
    assert [p.name for p in whole.checkpoints] == ["checkpoint-3", "checkpoint-6"]
    # an interrupted run: only its first checkpoint exists
    part = tmp_path / "b"
    part.mkdir()
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoint-3", part / "checkpoint-3")
    resumed = train(part, "pretrain", TASK, MODEL, cfg, progress=False)
    assert not resumed.skipped and resumed.losses == whole.losses
    a, b = _weights(whole.load()), _weights(resumed.load())
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the final checkpoint exists: nothing runs again
    again = train(part, "pretrain", TASK, MODEL, cfg, progress=False)
    assert again.skipped and again.losses == whole.losses
    files = sorted(p.name for p in (part / "checkpoint-6").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert read_state(part / "checkpoint-6")["step"] == 6


def test_other_settings_are_refused_not_overwritten(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=4, save_every=2, dims_steps=0, points_steps=0)
    train(tmp_path, "pretrain", TASK, MODEL, cfg, progress=False)
    with pytest.raises(InputError, match="other settings"):
        train(tmp_path, "pretrain", TASK, MODEL, TrainConfig(steps=2, batch_size=4, lr=5e-4, save_every=2), progress=False)
    assert len(checkpoints(tmp_path)) == 1


def test_finetune_starts_from_the_pretrained_weights_and_records_them(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=4, save_every=2, dims_steps=0, points_steps=0)
    pre = train(tmp_path / "pre", "pretrain", TASK, MODEL, cfg, progress=False)
    ft = finetune(tmp_path / "ft", pre.final, TASK, TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup=0, save_every=3,
                                                                dims_steps=0, points_steps=0), progress=False)
    state = read_state(ft.final)
    assert state["phase"] == "finetune" and len(state["init"]) == 16
    p = sample_prompts(TASK, 4, "discrete", 0)
    assert not torch.allclose(predict(pre.load(), p), predict(ft.load(), p))
    # the discrete set must be the pretraining one
    with pytest.raises(InputError, match="discrete set"):
        finetune(tmp_path / "ft2", pre.final, RegressionTask(dim=2, n_points=6, discrete_seed=3), progress=False)


def test_curriculum_schedule():
    cfg = TrainConfig(steps=100, points_start=5, points_steps=50, dims_steps=40)
    assert cfg.points_at(1, 41) == 6 and cfg.points_at(50, 41) == 41 and cfg.points_at(25, 41) == 23
    assert [cfg.dims_at(s, 4) for s in (1, 13, 14, 27, 39, 40)] == [1, 1, 2, 3, 3, 4]
    assert cfg.lr_at(cfg.warmup) == pytest.approx(cfg.lr) and cfg.lr_at(100) == pytest.approx(0.1 * cfg.lr)


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(InputError, match="schedule must be one of cosine, constant"):
        TrainConfig(schedule="linear")
    with pytest.raises(InputError, match="phase must be one of pretrain, finetune"):
        train(tmp_path, "distill", TASK, MODEL, TrainConfig())
    with pytest.raises(InputError, match="the task has dim 3"):
        train(tmp_path, "pretrain", RegressionTask(dim=3), MODEL, TrainConfig())
    with pytest.raises(ArtifactError, match="not a checkpoint folder"):
        finetune(tmp_path / "x", tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.json").write_text("{oops")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_checkpoint(tmp_path / "bad")
    assert json.loads(json.dumps(TrainConfig().to_dict()))["steps"] == TrainConfig().steps
