import pytest

from ivkit.core.errors import InputError
from ivkit.synthetic.data import RegressionTask
from ivkit.synthetic.model import ModelConfig
from ivkit.synthetic.study import StudyConfig, run_study
from ivkit.synthetic.train import TrainConfig

TASK = RegressionTask(dim=2, n_points=6)


def _config(**kw):
    base = dict(task=TASK, model=ModelConfig(dim=2, n_points=6, n_embd=16, n_layer=2, n_head=2),
                pretrain=TrainConfig(steps=4, batch_size=8, save_every=4, points_steps=0, dims_steps=2),
                finetune=TrainConfig(steps=2, batch_size=8, save_every=2, points_steps=0, dims_steps=0),
                n_test=60, n_validation=40, alphas=(1.0, 2.0), examples=(1, 5), bins=3, head_examples=(1, 3),
                head_prompts=20, top_k=2)
    base.update(kw)
    return StudyConfig(**base)


def test_a_tiny_study_runs_and_resumes(tmp_path):
    first = run_study(tmp_path, _config(), progress=False)
    assert first.curves.to_pandas()["prior"].unique().tolist() == ["continuous", "discrete"]
    assert len(first.distance.to_pandas()) >= 3 and first.conjugate.chosen in (1.0, 2.0)
    assert len(first.recovery.to_pandas()) >= 5 and first.change.k == 2
    assert set(first.implied.best) == {"pretrained", "fine-tuned"}
    again = run_study(tmp_path, _config(), progress=False)
    assert again.pretrain.skipped and again.finetune.skipped
    assert again.seconds["measure"] == first.seconds["measure"]  # loaded, not measured again
    assert (again.ranking_pretrained.scores == first.ranking_pretrained.scores).all()
    assert again.recovery.to_pandas().equals(first.recovery.to_pandas())
    # a setting the measurements read: they run again, training does not
    third = run_study(tmp_path, _config(n_test=70), progress=False)
    assert third.pretrain.skipped and third.continuous.distance.shape == (70,)


@pytest.mark.parametrize("kw, match", [
    ({"alphas": (2.0, 3.0)}, "include 1"),
    ({"examples": (1, 6)}, "n_points - 1 = 5"),
    ({"head_examples": (9,)}, "head_examples"),
    ({"head_prompts": 100}, "must not exceed"),
    ({"model": ModelConfig(dim=3, n_points=6)}, "does not fit the task"),
])
def test_bad_settings_fail_before_any_work(kw, match):
    with pytest.raises(InputError, match=match):
        _config(**kw)
