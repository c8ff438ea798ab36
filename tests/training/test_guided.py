"""IV-guided training: the KL terms against hand-computed values, the cached teacher against a live
one, the schedule, and a guided run that logs every term and resumes mid-schedule."""

import json
import math

import pytest
import torch
from transformers import TrainerCallback

import ivkit
from ivkit import InstructionVector, finetune, mean_head_activations
from ivkit.core.prompts import DEFAULT_TEMPLATE
from ivkit.core.tasks import load_task
from ivkit.training import GuidanceConfig
from ivkit.training.data import build_features
from ivkit.training.guided import iv_strength
from ivkit.training.teacher import bucket_kl, build_teacher_cache

from ..conftest import make_tiny, prompts_of_mixed_lengths


def test_bucket_kl_against_a_hand_computed_case():
    # student logits (0, 0, ln 2) at T=1: p_s = (1/4, 1/4, 1/2); teacher p_t = (1/2, 1/4, 1/4)
    student = torch.tensor([[0.0, 0.0, math.log(2.0)]])
    teacher = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    want = 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1.0) + 0.5 * math.log(0.5 / 0.25)  # = 0.25 ln 2
    idx = torch.tensor([[0, 1, 2]])
    got = bucket_kl(student, idx, teacher, torch.logsumexp(teacher, -1), 1.0)
    assert got.item() == pytest.approx(want, abs=1e-7) and want == pytest.approx(0.25 * math.log(2))
    # the top-1 bucket version: classes {token 0} and {the rest}: p_s = (1/4, 3/4), p_t = (1/2, 1/2)
    top1 = bucket_kl(student, idx[:, :1], teacher[:, :1], torch.logsumexp(teacher, -1), 1.0)
    assert top1.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-7)
    assert top1.item() <= got.item()


def test_bucket_kl_is_the_full_kl_at_full_k_zero_when_equal_and_smaller_when_bucketed():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 40, generator=gen) * 3, torch.randn(5, 40, generator=gen) * 3
    T = 2.0
    full = torch.nn.functional.kl_div(torch.log_softmax(t / T, -1), torch.softmax(s / T, -1), reduction="none").sum(-1)
    vals, idx = t.topk(40, -1)
    lse = torch.logsumexp(t / T, -1)
    assert torch.allclose(bucket_kl(s, idx, vals, lse, T), full, atol=1e-5)
    assert bucket_kl(t, idx, vals, lse, T).abs().max() < 1e-5            # the student is the teacher
    v8, i8 = t.topk(8, -1)
    assert (bucket_kl(s, i8, v8, lse, T) <= full + 1e-6).all()


@pytest.fixture(scope="module")
def guided_setup(tiny_llama):
    means = mean_head_activations(tiny_llama, prompts_of_mixed_lengths(tiny_llama, n=4), progress=False)
    iv = InstructionVector.build(tiny_llama, means, heads=[(1, 0), (2, 3)], layer=1, scale=2.0)
    feats = build_features(tiny_llama, load_task("antonym").examples[:6], instruction=None, chat=False,
                           template=DEFAULT_TEMPLATE, max_len=64)
    return iv, feats


def test_the_cached_teacher_equals_a_live_forward(tiny_llama, guided_setup):
    iv, feats = guided_setup
    vocab = tiny_llama.model.get_output_embeddings().weight.shape[0]
    cache = build_teacher_cache(tiny_llama, feats, iv, temperature=2.0, top_k=vocab, batch_size=4, progress=False,
                                record_heads=True)
    for i, f in enumerate(feats):  # one example at a time, no padding, the IV added by hand
        batch = tiny_llama.make_batch([f.input_ids])
        with ivkit.models.hooks.add_to_residual(tiny_llama, 1, iv.vector, scale=2.0, positions=f.prompt_end):
            logits = tiny_llama.forward(batch, logits_to_keep=0)[0]
        live = torch.log_softmax(logits[f.prompt_end:len(f.input_ids) - 1] / 2.0, -1)       # (a, vocab)
        a = f.answer_positions
        cached = torch.full((a, vocab), float("nan"))
        cached.scatter_(1, cache.top_idx[i, :a], cache.top_logit[i, :a] / 2.0 - cache.lse[i, :a, None])
        assert int(cache.n_pos[i]) == a and (cached - live).abs().max() <= 1e-5
        with ivkit.models.hooks.record_head_outputs(tiny_llama, positions=f.prompt_end) as rec:
            tiny_llama.forward(batch)
        assert torch.allclose(cache.heads[i], torch.stack([rec.z[1][0, 0], rec.z[2][0, 3]]), atol=1e-5)


def test_the_schedule_is_the_documented_one():
    total = 100
    got = [iv_strength(s, total) for s in range(total)]
    assert got[:30] == [1.0] * 30
    assert got[30:75] == [v for v in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1) for _ in range(5)]
    assert got[75:] == [0.0] * 25
    assert [iv_strength(s, 8) for s in range(8)] == [1.0, 1.0, 1.0, 0.8, 0.5, 0.3, 0.0, 0.0]
    assert iv_strength(50, 100, "constant") == 1.0 and iv_strength(0, 100, "none") == 0.0


def test_guided_training_logs_every_term_and_resumes_mid_schedule(tmp_path, tokenizer, guided_setup, task_file):
    iv, _ = guided_setup

    def fresh():
        return ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer, name="tiny-llama")
    kw = dict(batch_size=4, lr=1e-3, progress=False, seed=1, save_every=4, iv=iv,
              guidance=GuidanceConfig(top_k=32, kl_threshold=0.0, consistency=1.0, consistency_threshold=0.0))
    straight = finetune(fresh(), str(task_file), tmp_path / "a", steps=8, **kw)
    logs = [h for h in straight.log_history if "loss" in h]
    assert [h["iv_strength"] for h in logs] == [iv_strength(s, 8) for s in range(8)]
    for key in ("loss_task", "kl_last", "kl_answer", "consistency"):
        assert all(math.isfinite(h[key]) for h in logs), key
    assert logs[0]["kl_last"] < 1e-4  # step 0: the student with the IV at full strength is the teacher
    assert max(h["kl_answer"] for h in logs[1:]) > 1e-3                  # and then it moves away
    assert (tmp_path / "a" / "teacher_cache.safetensors").exists()
    with pytest.raises(KeyboardInterrupt):                               # killed halfway through the schedule
        finetune(fresh(), str(task_file), tmp_path / "b", steps=8, callbacks=[_StopAfterSaving(4)], **kw)
    resumed = finetune(fresh(), str(task_file), tmp_path / "b", steps=8, **kw)
    again = [h for h in resumed.log_history if "loss" in h]
    assert [h["iv_strength"] for h in again] == [h["iv_strength"] for h in logs]
    assert [h["loss"] for h in again] == pytest.approx([h["loss"] for h in logs], abs=1e-6)
    run = json.loads((tmp_path / "b" / "ivkit_run.json").read_text())
    assert run["guidance"]["consistency"] == 1.0 and run["iv"]["layer"] == 1


class _StopAfterSaving(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_without_the_iv_in_the_student_the_first_step_already_differs(tmp_path, tokenizer, guided_setup, task_file):
    iv, _ = guided_setup
    model = ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer)
    res = finetune(model, str(task_file), tmp_path / "n", steps=2, batch_size=4, lr=1e-3, progress=False, iv=iv,
                   guidance=GuidanceConfig(schedule="none", kl_threshold=0.0, top_k=16, consistency=1.0))
    first = next(h for h in res.log_history if "loss" in h)
    assert first["iv_strength"] == 0.0 and first["kl_last"] > 1e-3
    assert first["consistency"] < 1e-8  # no IV and the weights of before: the heads are the original ones


def test_bad_guidance_options_are_refused():
    from ivkit import InputError

    with pytest.raises(InputError, match="unknown schedule 'linear'"):
        GuidanceConfig(schedule="linear")
    with pytest.raises(InputError, match="temperature must be a finite number > 0"):
        GuidanceConfig(temperature=0)
    with pytest.raises(InputError, match="IV-guided training has no option 'alpha'"):
        GuidanceConfig.from_options(alpha=3)
