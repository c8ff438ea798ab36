import pytest
import torch

from ivkit import IndirectEffects, indirect_effects, mean_head_activations
from ivkit.activations import head_activations
from ivkit.core.errors import IncompatibleVectorError
from ivkit.core.stats import rank_agreement

from ..conftest import prompts_of_mixed_lengths


def test_batched_mean_activations_equal_batch_size_one(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=7)
    batched = mean_head_activations(tiny_model, enc, batch_size=4)
    single = mean_head_activations(tiny_model, enc, batch_size=1)
    g = tiny_model.geometry
    assert batched.shape == (g.n_layers, g.n_heads, g.d_head)
    assert (batched - single).abs().max() <= 1e-5
    per = head_activations(tiny_model, enc, batch_size=3)
    assert torch.allclose(per.mean(0), batched, atol=1e-6)


def test_patching_with_own_activation_gives_zero_effect(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=2, style="shuffled")
    for i in range(len(enc)):
        one = enc.subset([i])
        own = head_activations(tiny_model, one)[0]
        ie = indirect_effects(tiny_model, one, own, method="naive")
        assert ie.per_trial.abs().max() == 0.0


def _hand_patched_prob(model, ids, layer, head, value, target):
    """Independent oracle: a plain forward pre-hook, batch size 1, no ivkit helpers."""
    g = model.geometry

    def hook(module, args):
        x = args[0].clone()
        x[0, -1, head * g.d_head:(head + 1) * g.d_head] = value
        return (x,)

    h = model.attn_out_proj(layer).register_forward_pre_hook(hook) if layer is not None else None
    try:
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([ids])).logits[0, -1]
    finally:
        if h is not None:
            h.remove()
    return torch.softmax(logits.float(), -1)[target].item()


def test_naive_aie_equals_hand_written_patch(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=3, style="shuffled")
    clean = prompts_of_mixed_lengths(tiny_model, n=5, seed=1)
    means = mean_head_activations(tiny_model, clean)
    ie = indirect_effects(tiny_model, enc, means, method="naive")
    g = tiny_model.geometry
    assert ie.aie.shape == (g.n_layers, g.n_heads) and ie.per_trial.shape == (3, g.n_layers, g.n_heads)
    assert ie.per_trial.abs().max() > 1e-3, "effects are too small for the comparison to mean anything"
    for t in range(3):
        ids, target = enc.input_ids[t], int(enc.first_token[t])
        base = _hand_patched_prob(tiny_model, ids, None, None, None, target)
        assert ie.baseline[t].item() == pytest.approx(base, abs=1e-6)
        for layer in range(g.n_layers):
            for head in range(g.n_heads):
                want = _hand_patched_prob(tiny_model, ids, layer, head, means[layer, head], target) - base
                assert ie.per_trial[t, layer, head].item() == pytest.approx(want, abs=1e-6)
    assert torch.allclose(ie.aie, ie.per_trial.mean(0))


def test_nll_metric_is_minus_delta_nll_of_the_whole_answer(tiny_llama):
    enc = prompts_of_mixed_lengths(tiny_llama, n=2, style="shuffled")
    means = mean_head_activations(tiny_llama, prompts_of_mixed_lengths(tiny_llama, n=4, seed=2))
    ie = indirect_effects(tiny_llama, enc, means, method="naive", metric="nll")
    # Hand computation for one trial and one head.
    t, layer, head = 1, 2, 3
    ids, ans = enc.input_ids[t], enc.answer_ids[t]
    g = tiny_llama.geometry

    def loglik(patch: bool) -> float:
        def hook(module, args):
            x = args[0].clone()
            x[0, len(ids) - 1, head * g.d_head:(head + 1) * g.d_head] = means[layer, head]
            return (x,)
        h = tiny_llama.attn_out_proj(layer).register_forward_pre_hook(hook) if patch else None
        with torch.no_grad():
            logits = tiny_llama.model(input_ids=torch.tensor([ids + ans])).logits[0]
        if h:
            h.remove()
        logp = torch.log_softmax(logits.float(), -1)
        return sum(logp[len(ids) - 1 + j, a].item() for j, a in enumerate(ans))

    assert len(ans) >= 1
    assert ie.baseline[t].item() == pytest.approx(loglik(False), abs=1e-4)
    assert ie.per_trial[t, layer, head].item() == pytest.approx(loglik(True) - loglik(False), abs=1e-4)


def test_mean_activations_from_another_model_are_refused(tiny_llama, tiny_gemma):
    enc = prompts_of_mixed_lengths(tiny_llama, n=2, style="shuffled")
    wrong = mean_head_activations(tiny_gemma, prompts_of_mixed_lengths(tiny_gemma, n=2))
    with pytest.raises(IncompatibleVectorError, match="another model"):
        indirect_effects(tiny_llama, enc, wrong)


def test_bad_method_and_metric(tiny_llama):
    enc = prompts_of_mixed_lengths(tiny_llama, n=2)
    means = mean_head_activations(tiny_llama, enc)
    with pytest.raises(ValueError, match="unknown method"):
        indirect_effects(tiny_llama, enc, means, method="magic")
    with pytest.raises(ValueError, match="unknown metric"):
        indirect_effects(tiny_llama, enc, means, metric="f1")


def test_indirect_effects_json_roundtrip_and_accessors(tmp_path):
    per = torch.tensor([[[0.1, 0.5], [0.0, -0.2]], [[0.3, 0.5], [0.2, 0.0]]])
    ie = IndirectEffects(per.mean(0), per, torch.tensor([0.1, 0.2]), "naive", "prob", 1.5, {"task": "t"})
    assert ie.top_heads(2) == [(0, 1, pytest.approx(0.5)), (0, 0, pytest.approx(0.2))]
    ie.save(tmp_path / "ie.json")
    back = IndirectEffects.load(tmp_path / "ie.json")
    assert torch.allclose(back.aie, ie.aie) and torch.allclose(back.per_trial, ie.per_trial)
    assert back.method == "naive" and back.info == {"task": "t"}
    df = ie.to_pandas()
    assert list(df.columns) == ["layer", "head", "aie", "std", "rank"] and df.iloc[0]["rank"] == 1
    fig = ie.plot(top_k=2)
    assert fig.data[0].z.shape == (2, 2)
    assert (list(fig.data[1].x), list(fig.data[1].y)) == ([1, 0], [0, 0])  # the top 2 circled: (0, 1), (0, 0)
    mine = ie.plot(heads=[(1, 1), (0, 1)])  # an IV's own heads, in their order, when they are not the top k
    assert (list(mine.data[1].x), list(mine.data[1].y), mine.data[1].name) == ([1, 1], [1, 0], "chosen heads")


def test_rank_agreement():
    a = torch.arange(12.0).reshape(3, 4)
    assert rank_agreement(a, a, k=3) == {"spearman": pytest.approx(1.0), "top3_overlap": 1.0}
    assert rank_agreement(a, -a, k=3)["spearman"] == pytest.approx(-1.0)
