"""method="fast" must give the naive numbers; method="attribution" must be exact where the model
is linear; unsupported models fall back to naive with a logged reason, never a wrong answer."""

import logging

import pytest
import torch

import ivkit
from ivkit import indirect_effects, mean_head_activations
from ivkit.fast import FastPathUnsupported

from .conftest import make_tiny, prompts_of_mixed_lengths


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


@pytest.mark.parametrize("kind", ["qwen2", "mistral", "qwen3", "gemma", "gemma2", "gpt_neox"])
def test_fast_equals_naive_other_families(kind, tokenizer):
    model = ivkit.load_model(make_tiny(kind, len(tokenizer)), tokenizer)
    corrupted, means = _setup(model, n=3)
    naive = indirect_effects(model, corrupted, means, method="naive", progress=False)
    fast = indirect_effects(model, corrupted, means, method="fast", progress=False, fallback=False)
    assert (fast.per_trial - naive.per_trial).abs().max() <= 1e-5


def test_fast_is_independent_of_chunking(tiny_gemma):
    corrupted, means = _setup(tiny_gemma, n=5)
    a = indirect_effects(tiny_gemma, corrupted, means, method="fast", progress=False, prompts_per_pass=1)
    b = indirect_effects(tiny_gemma, corrupted, means, method="fast", progress=False, prompts_per_pass=5)
    c = indirect_effects(tiny_gemma, corrupted, means, method="fast", progress=False, max_memory_mb=0.001)
    assert (a.per_trial - b.per_trial).abs().max() <= 1e-6 and (a.per_trial - c.per_trial).abs().max() <= 1e-6


def test_unsupported_model_falls_back_to_naive_with_a_reason(tokenizer, caplog):
    gpt2 = ivkit.load_model(make_tiny("gpt2", len(tokenizer)), tokenizer)
    corrupted, means = _setup(gpt2, n=2)
    with caplog.at_level(logging.WARNING):
        fast = indirect_effects(gpt2, corrupted, means, method="fast", progress=False)
    assert "fast path unavailable for gpt2" in caplog.text and "positional arguments" in caplog.text
    naive = indirect_effects(gpt2, corrupted, means, method="naive", progress=False)
    assert torch.equal(fast.per_trial, naive.per_trial)
    with pytest.raises(FastPathUnsupported):
        indirect_effects(gpt2, corrupted, means, method="fast", progress=False, fallback=False)


def test_guard_row_catches_a_wrong_continuation(tiny_llama, monkeypatch, caplog):
    """If the re-run ever disagrees with the full pass, the answer comes from the naive path."""
    import ivkit.fast as fast_mod

    corrupted, means = _setup(tiny_llama, n=2)
    real = fast_mod._final_logits
    monkeypatch.setattr(fast_mod, "_final_logits", lambda m, h: real(m, h) + torch.randn_like(real(m, h)))
    with caplog.at_level(logging.WARNING):
        res = indirect_effects(tiny_llama, corrupted, means, method="fast", progress=False)
    assert "unpatched continuation differs" in caplog.text
    naive = indirect_effects(tiny_llama, corrupted, means, method="naive", progress=False)
    assert torch.equal(res.per_trial, naive.per_trial)


def _linear_model(tokenizer):
    """A Llama that is affine from any head output at the last position to the final logits:
    no query projection (uniform attention), no MLP, and identities in place of the norms."""
    import transformers as tf

    from .conftest import _init

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
    agree = ivkit.rank_agreement(exact.aie, attr.aie)
    assert agree["spearman"] > 0.3 and agree["top10_overlap"] >= 0.5  # a useful, not an exact, ranking (0.62, 0.9)


def test_attribution_leaves_parameters_trainable(tiny_llama):
    corrupted, means = _setup(tiny_llama, n=2)
    flags = [p.requires_grad for p in tiny_llama.model.parameters()]
    indirect_effects(tiny_llama, corrupted, means, method="attribution", progress=False)
    assert [p.requires_grad for p in tiny_llama.model.parameters()] == flags
    assert all(p.grad is None for p in tiny_llama.model.parameters())
