"""method="fast" must give the naive numbers on every architecture in the table; method="attribution"
must be exact where the model is linear; a model the fast path cannot re-run falls back to naive with
the reason logged and saved, never a wrong answer; any other error inside the fast path propagates."""

import logging

import pytest
import torch

import ivkit
from ivkit import indirect_effects, mean_head_activations
from ivkit.core.arch import ARCHITECTURES
from ivkit.core.stats import rank_agreement
from ivkit.engine.blockcall import FastPathUnsupported

from ..conftest import make_tiny, prompts_of_mixed_lengths


def _setup(model, n=5, seed=0):
    corrupted = prompts_of_mixed_lengths(model, n=n, style="shuffled", seed=seed)
    means = mean_head_activations(model, prompts_of_mixed_lengths(model, n=4, seed=seed + 1), progress=False)
    return corrupted, means


@pytest.mark.parametrize("metric", ["prob", "logit", "nll"])
def test_fast_equals_naive(tiny_model, metric, caplog):
    """Tiny Llama and Gemma3 (4 x 32-wide heads into d_model 48, sliding window 6 shorter than every
    prompt, query/key norms); prompts of different lengths share each pass."""
    corrupted, means = _setup(tiny_model)
    assert len({len(x) for x in corrupted.input_ids}) > 1
    naive = indirect_effects(tiny_model, corrupted, means, method="naive", metric=metric, progress=False)
    with caplog.at_level(logging.WARNING):
        fast = indirect_effects(tiny_model, corrupted, means, method="fast", metric=metric, progress=False,
                                prompts_per_pass=3, fallback=False)
    assert "fast path unavailable" not in caplog.text
    assert naive.per_trial.abs().max() > 1e-3, "effects too small for the comparison to mean anything"
    assert (fast.per_trial - naive.per_trial).abs().max() <= 1e-5
    assert (fast.baseline - naive.baseline).abs().max() <= 1e-5
    assert [h[:2] for h in fast.top_heads(5)] == [h[:2] for h in naive.top_heads(5)]


#: model_type in ivkit's architecture table -> the tiny model of conftest.make_tiny.
TINY_KIND = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma",
             "gemma2": "gemma2", "gemma3_text": "gemma3", "gpt2": "gpt2", "gpt_neox": "gpt_neox"}


def test_every_architecture_in_the_table_has_a_tiny_model():
    assert set(ARCHITECTURES) == set(TINY_KIND), "add a tiny model for the new architecture (conftest)"


@pytest.mark.parametrize("model_type", sorted(TINY_KIND))
def test_fast_never_falls_back_on_a_supported_architecture(model_type, tokenizer):
    """The test that goes red when a transformers release renames a block argument (as 5.24 did
    with ``cache``): fallback=False turns any fallback into an error."""
    model = ivkit.load_model(make_tiny(TINY_KIND[model_type], len(tokenizer)), tokenizer)
    assert model.model_type == model_type
    corrupted, means = _setup(model, n=3)
    naive = indirect_effects(model, corrupted, means, method="naive", progress=False)
    fast = indirect_effects(model, corrupted, means, method="fast", progress=False, fallback=False)
    assert fast.method == "fast" and "fast_unavailable" not in fast.info
    assert (fast.per_trial - naive.per_trial).abs().max() <= 1e-5


def test_fast_is_independent_of_chunking(tiny_gemma):
    corrupted, means = _setup(tiny_gemma, n=5)
    a = indirect_effects(tiny_gemma, corrupted, means, method="fast", progress=False, prompts_per_pass=1)
    b = indirect_effects(tiny_gemma, corrupted, means, method="fast", progress=False, prompts_per_pass=5)
    c = indirect_effects(tiny_gemma, corrupted, means, method="fast", progress=False, max_memory_mb=0.001)
    assert (a.per_trial - b.per_trial).abs().max() <= 1e-6 and (a.per_trial - c.per_trial).abs().max() <= 1e-6


def _unsupported(tokenizer):
    """A tiny Llama whose second block also receives a tensor the continuation cannot re-make per
    row (as a future architecture might pass)."""
    model = ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer, name="odd-llama")

    def hook(module, args, kwargs):
        return args, {**kwargs, "extra_bias": torch.zeros(3, 7)}
    model.block(1).register_forward_pre_hook(hook, with_kwargs=True)
    return model


def test_unsupported_model_falls_back_to_naive_and_says_why(tokenizer, caplog):
    model = _unsupported(tokenizer)
    corrupted, means = _setup(model, n=2)
    with caplog.at_level(logging.WARNING):
        fast = indirect_effects(model, corrupted, means, method="fast", progress=False)
    assert "fast path unavailable for llama" in caplog.text and "extra_bias" in caplog.text
    assert fast.method == "naive" and "extra_bias" in fast.info["fast_unavailable"]
    naive = indirect_effects(model, corrupted, means, method="naive", progress=False)
    assert torch.equal(fast.per_trial, naive.per_trial)
    with pytest.raises(FastPathUnsupported, match="extra_bias"):
        indirect_effects(model, corrupted, means, method="fast", progress=False, fallback=False)


def test_a_fallback_is_recorded_in_the_saved_files(tokenizer, tmp_path):
    import json

    model = _unsupported(tokenizer)
    res = ivkit.extract(model, "antonym", shots=3, mean_prompts=4, trials=2, top_k=2, sweep_prompts=4,
                        filter_correct=False, progress=False, scales=(1.0,))
    res.save(tmp_path)
    ie = json.loads((tmp_path / "indirect_effects.json").read_text())
    iv = json.loads((tmp_path / "iv.json").read_text())
    assert ie["method"] == "naive" and "extra_bias" in ie["info"]["fast_unavailable"]
    assert iv["method"] == "naive" and "extra_bias" in iv["fast_unavailable"]
    sweep = json.loads((tmp_path / "layer_sweep.json").read_text())
    assert sweep["method"] == "naive" and "extra_bias" in sweep["fast_unavailable"]
    from ivkit.cli.output import method_line as _method_line

    assert _method_line(res).startswith("method: naive (fast unavailable: decoder blocks take tensor arguments")


def test_an_unexpected_error_inside_the_fast_path_propagates(tiny_llama, monkeypatch):
    """Only the explicit capability checks may turn into a fallback: a bug must not become a
    silent 100x slowdown."""
    import ivkit.engine.continuation as fast_mod

    corrupted, means = _setup(tiny_llama, n=2)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the prefix attention")
    monkeypatch.setattr(fast_mod, "_prefix_attention", broken)
    monkeypatch.setattr(fast_mod, "_register_attention",
                        lambda: __import__("transformers").AttentionInterface.register(fast_mod.ATTN_KEY, broken))
    with pytest.raises(RuntimeError, match="a bug in the prefix attention"):
        indirect_effects(tiny_llama, corrupted, means, method="fast", progress=False)
    monkeypatch.undo()
    fast_mod._register_attention()


def test_guard_row_catches_a_wrong_continuation(tiny_llama, monkeypatch, caplog):
    """If the re-run ever disagrees with the full pass, the answer comes from the naive path."""
    import ivkit.engine.continuation as fast_mod

    corrupted, means = _setup(tiny_llama, n=2)
    real = fast_mod.final_logits
    monkeypatch.setattr(fast_mod, "final_logits", lambda m, h: real(m, h) + torch.randn_like(real(m, h)))
    with caplog.at_level(logging.WARNING):
        res = indirect_effects(tiny_llama, corrupted, means, method="fast", progress=False)
    assert "unpatched continuation differs" in caplog.text
    naive = indirect_effects(tiny_llama, corrupted, means, method="naive", progress=False)
    assert torch.equal(res.per_trial, naive.per_trial)


def _linear_model(tokenizer):
    """A Llama that is affine from any head output at the last position to the final logits:
    no query projection (uniform attention), no MLP, and identities in place of the norms."""
    import transformers as tf

    from ..conftest import _init

    cfg = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         max_position_embeddings=256, tie_word_embeddings=False)
    model = _init(tf.LlamaForCausalLM(cfg), 0.3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            layer.input_layernorm = torch.nn.Identity()
            layer.post_attention_layernorm = torch.nn.Identity()
        model.model.norm = torch.nn.Identity()
    return ivkit.load_model(model, tokenizer, name="linear-llama")


def test_attribution_is_exact_on_a_linear_model(tokenizer):
    model = _linear_model(tokenizer)
    corrupted, means = _setup(model, n=3)
    exact = indirect_effects(model, corrupted, means, method="naive", metric="logit", progress=False)
    attr = indirect_effects(model, corrupted, means, method="attribution", metric="logit", progress=False)
    scale = exact.per_trial.abs().max()
    assert scale > 1e-2
    assert (attr.per_trial - exact.per_trial).abs().max() <= 1e-4 * scale
    assert torch.allclose(attr.baseline, exact.baseline, atol=1e-5)


def test_attribution_is_only_approximate_on_a_real_nonlinearity(tiny_llama):
    corrupted, means = _setup(tiny_llama, n=3)
    exact = indirect_effects(tiny_llama, corrupted, means, method="naive", progress=False)
    attr = indirect_effects(tiny_llama, corrupted, means, method="attribution", progress=False, batch_size=2)
    assert torch.allclose(attr.baseline, exact.baseline, atol=1e-6)  # same corrupted runs
    assert (attr.per_trial - exact.per_trial).abs().max() > 1e-6      # but a first-order estimate
    agree = rank_agreement(exact.aie, attr.aie)
    assert agree["spearman"] > 0.3 and agree["top10_overlap"] >= 0.5  # a useful, not an exact, ranking (0.62, 0.9)


def test_attribution_leaves_parameters_trainable(tiny_llama):
    corrupted, means = _setup(tiny_llama, n=2)
    flags = [p.requires_grad for p in tiny_llama.model.parameters()]
    indirect_effects(tiny_llama, corrupted, means, method="attribution", progress=False)
    assert [p.requires_grad for p in tiny_llama.model.parameters()] == flags
    assert all(p.grad is None for p in tiny_llama.model.parameters())
