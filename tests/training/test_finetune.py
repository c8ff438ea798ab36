import json

import pytest
import torch

import ivkit
from ivkit import CheckpointSeries, IVKitError, finetune
from ivkit.core.prompts import DEFAULT_TEMPLATE
from ivkit.core.tasks import Example
from ivkit.training.data import build_features

from ..conftest import make_tiny


@pytest.fixture()
def small_task(tmp_path):
    exs = [{"input": w, "output": w.capitalize()} for w in
           ["hot", "cold", "big", "small", "up", "down", "left", "right"]]
    p = tmp_path / "cap.json"
    p.write_text(json.dumps(exs))
    return p


def _fresh(tokenizer):
    return ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer, name="tiny-llama")


def test_only_answer_tokens_are_trained(tokenizer):
    ivm = _fresh(tokenizer)
    (f,) = build_features(ivm, [Example("hot", "Hot")], instruction="Capitalize.", chat=False,
                          template=DEFAULT_TEMPLATE, max_len=64)
    ids, labels = f.input_ids, f.labels
    prompt_len = len(ivm.encode("Capitalize.\n\nQ: hot\nA:"))
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[prompt_len:-1]) == " Hot"
    assert f.prompt_end == prompt_len - 1 and f.answer_positions == len(ids) - prompt_len
    (cut,) = build_features(ivm, [Example("hot", "Hot")], instruction="Capitalize.", chat=False,
                            template=DEFAULT_TEMPLATE, max_len=6)
    assert cut.input_ids == ids[-6:] and cut.labels == labels[-6:] and cut.prompt_end == f.prompt_end - (len(ids) - 6)


def test_the_data_order_is_seeded(tmp_path, tokenizer, small_task):
    kw = dict(save_every=10, batch_size=2, lr=1e-3, progress=False)
    a = finetune(_fresh(tokenizer), str(small_task), tmp_path / "a", steps=4, seed=1, **kw)
    b = finetune(_fresh(tokenizer), str(small_task), tmp_path / "b", steps=4, seed=1, **kw)
    c = finetune(_fresh(tokenizer), str(small_task), tmp_path / "c", steps=4, seed=2, **kw)
    assert a.losses == b.losses
    assert [l for _, l in a.losses] != pytest.approx([l for _, l in c.losses], abs=1e-6)


def test_loss_falls_and_checkpoints_are_written(tmp_path, tokenizer, small_task):
    res = finetune(_fresh(tokenizer), str(small_task), tmp_path / "run", steps=6, save_every=3, batch_size=8,
                   lr=3e-3, progress=False)
    assert [p.name for p in res.checkpoints] == ["checkpoint-3", "checkpoint-6"]
    losses = [l for _, l in res.losses]
    assert len(losses) == 6 and losses[-1] < losses[0]
    state = json.loads((res.checkpoints[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and len([h for h in state["log_history"] if "loss" in h]) == 6
    assert res.steps_per_second > 0 and (res.checkpoints[-1] / "optimizer.pt").exists()
    assert not (res.checkpoints[0] / "optimizer.pt").exists()  # only the newest keeps what resuming needs
    # Checkpoints are ordinary HF directories that a series can load.
    series = CheckpointSeries.from_trainer_dir(tmp_path / "run")
    assert series.labels == ["checkpoint-3", "checkpoint-6"]
    m = series.load(1)
    assert torch.allclose(m.model.model.layers[0].self_attn.o_proj.weight,
                          ivkit.load_model(str(res.checkpoints[-1])).model.model.layers[0].self_attn.o_proj.weight)


def test_resume_gives_the_uninterrupted_run(tmp_path, tokenizer, small_task):
    kw = dict(save_every=2, batch_size=4, lr=1e-3, progress=False, seed=3)
    straight = finetune(_fresh(tokenizer), str(small_task), tmp_path / "a", steps=4, **kw)
    finetune(_fresh(tokenizer), str(small_task), tmp_path / "b", steps=2, **kw)           # "interrupted" at step 2
    resumed = finetune(_fresh(tokenizer), str(small_task), tmp_path / "b", steps=4, **kw)
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4]
    assert [l for _, l in resumed.losses] == pytest.approx([l for _, l in straight.losses], abs=1e-6)
    wa = ivkit.load_model(str(tmp_path / "a" / "checkpoint-4")).model.state_dict()
    wb = ivkit.load_model(str(tmp_path / "b" / "checkpoint-4")).model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    with pytest.raises(IVKitError, match="other settings"):
        finetune(_fresh(tokenizer), str(small_task), tmp_path / "b", steps=4, **{**kw, "lr": 5e-4})


def _with_dropout(tokenizer, p: float = 0.3):
    ivm = _fresh(tokenizer)
    for layer in ivm.model.model.layers:
        layer.self_attn.attention_dropout = p
    return ivm


def test_resume_continues_the_dropout_draws(tmp_path, tokenizer, small_task):
    """With dropout, an exact resume also needs the random state where the run stopped."""
    kw = dict(save_every=2, batch_size=4, lr=1e-3, progress=False, seed=3)
    straight = finetune(_with_dropout(tokenizer), str(small_task), tmp_path / "a", steps=4, **kw)
    finetune(_with_dropout(tokenizer), str(small_task), tmp_path / "b", steps=2, **kw)
    resumed = finetune(_with_dropout(tokenizer), str(small_task), tmp_path / "b", steps=4, **kw)
    assert [l for _, l in resumed.losses] == pytest.approx([l for _, l in straight.losses], abs=1e-6)
    # the draws matter: a run seeded differently takes other losses at the same steps
    other = finetune(_with_dropout(tokenizer), str(small_task), tmp_path / "c", steps=4, **{**kw, "seed": 4})
    assert [l for _, l in other.losses] != pytest.approx([l for _, l in straight.losses], abs=1e-6)


def test_runs_are_not_mixed(tmp_path, tokenizer, small_task):
    kw = dict(save_every=2, batch_size=4, lr=1e-3, progress=False)
    finetune(_fresh(tokenizer), str(small_task), tmp_path / "run", steps=2, **kw)
    with pytest.raises(IVKitError, match="not empty and resume is off"):
        finetune(_fresh(tokenizer), str(small_task), tmp_path / "run", steps=4, resume=False, **kw)
    (tmp_path / "run" / "checkpoint-2" / "optimizer.pt").unlink()
    with pytest.raises(IVKitError, match="no optimizer.pt"):
        finetune(_fresh(tokenizer), str(small_task), tmp_path / "run", steps=4, **kw)


def test_lora_checkpoints_load_as_a_series(tmp_path, tokenizer, small_task):
    import peft  # noqa: F401  (a dev dependency: make test installs it)
    base = tmp_path / "base"
    ivm = _fresh(tokenizer)
    ivm.model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    res = finetune(ivkit.load_model(str(base)), str(small_task), tmp_path / "lora", steps=4, save_every=2, lora=True,
                   lr=1e-2, progress=False)
    assert (res.checkpoints[-1] / "adapter_config.json").exists()
    series = CheckpointSeries.from_lora(base, res.checkpoints)
    assert series.labels == ["base", "checkpoint-2", "checkpoint-4"]
    fps = []
    for _, m in series:
        fps.append(series.fingerprints[series.labels[len(fps)]])
        assert m.model_type == "llama"
    assert len(set(fps)) == 3  # the adapters changed the weights


def test_a_finished_run_is_loaded_not_trained_again(tmp_path, tokenizer, small_task):
    """Its last epoch partial (8 examples, batch 3), a finished run rerun takes no extra step: its
    checkpoints, losses and weights are the first run's."""
    kw = dict(steps=4, save_every=2, batch_size=3, lr=1e-3, progress=False)
    first = finetune(_fresh(tokenizer), str(small_task), tmp_path / "run", **kw)
    model = _fresh(tokenizer)
    again = finetune(model, str(small_task), tmp_path / "run", **kw)
    assert [p.name for p in again.checkpoints] == ["checkpoint-2", "checkpoint-4"] and again.losses == first.losses
    saved = ivkit.load_model(str(tmp_path / "run" / "checkpoint-4")).model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in model.model.state_dict().items())
