"""The live IV tracking: its numbers land in the Trainer's log at the chosen steps, ahead of the
loggers, and equal a direct measurement on the same weights."""

import pytest
import torch

import ivkit
from ivkit import finetune
from ivkit.activations import mean_head_activations, residual_alignment
from ivkit.training.callbacks import IVTracking

from ..conftest import make_tiny


@pytest.fixture()
def reference(tokenizer):
    model = ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer, name="tiny-llama")
    res = ivkit.extract(model, "antonym", shots=3, mean_prompts=4, trials=2, top_k=3, filter_correct=False,
                        progress=False, sweep_prompts=6, scales=(1.0,))
    return model, res.iv


def test_tracking_logs_at_the_chosen_steps(tmp_path, reference, task_file):
    model, iv = reference
    res = finetune(model, str(task_file), tmp_path / "run", steps=4, save_every=4, batch_size=4, lr=3e-3,
                   progress=False, track={"antonym": iv}, track_every=2)
    rows = [h for h in res.log_history if "iv_cosine/antonym" in h]
    assert [h["step"] for h in rows] == [0, 2, 4]
    assert rows[0]["iv_cosine/antonym"] == pytest.approx(1.0, abs=1e-5)  # before training: the reference itself
    assert rows[-1]["iv_cosine/antonym"] < 1.0 - 1e-6                     # training moved it
    assert all("loss" in h for h in rows[1:])                              # on the training log lines


def test_the_numbers_are_a_direct_measurement(reference):
    model, iv = reference
    cb = IVTracking(model, {"antonym": iv}, n_prompts=6, accuracy=True)
    got = cb.measure()
    w = cb.watched[0]
    means = mean_head_activations(model, w.clean, progress=False)
    direct = ivkit.InstructionVector.build(model, means, heads=iv.heads)
    assert got["iv_cosine/antonym"] == pytest.approx(1.0, abs=1e-6) and direct.cosine(w.start) == pytest.approx(1.0)
    assert got["alignment/antonym"] == pytest.approx(residual_alignment(model, w.zero_shot, iv.vector)[iv.layer])
    with torch.no_grad():  # other weights: the rebuilt IV moves, and the callback sees it
        model.attn_out_proj(iv.heads[0][0]).weight.mul_(-1)
    moved = cb.measure()["iv_cosine/antonym"]
    direct = ivkit.InstructionVector.build(model, mean_head_activations(model, w.clean, progress=False), heads=iv.heads)
    assert moved == pytest.approx(direct.cosine(w.start), abs=1e-6) and moved < 0.99
    assert 0.0 <= got["zero_shot_iv/antonym"] <= 1.0 and "few_shot/antonym" in got
    assert torch.is_grad_enabled()


def test_install_puts_the_tracker_before_the_loggers(tmp_path, reference, task_file):
    from transformers import TrainerCallback

    seen = {}

    class Logger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            seen.update(logs)
    model, iv = reference
    finetune(model, str(task_file), tmp_path / "run", steps=2, save_every=2, batch_size=4, progress=False,
             track={"antonym": iv}, track_every=2, callbacks=[Logger()])
    assert "iv_cosine/antonym" in seen
