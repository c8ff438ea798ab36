import pytest
import torch

from ivkit import InstructionVector, mean_head_activations
from ivkit.analysis.anatomy_common import zero_shot_prompts
from ivkit.analysis.anatomy_decode import (
    decode_vector,
    direct_logits,
    logit_lens,
    readout_projection,
    top_token_reconstruction,
)
from ivkit.core.errors import InputError
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.core.tasks import load_task
from ivkit.evaluation import score_prompts

from ..conftest import prompts_of_mixed_lengths


def tiny_iv(model, layer=1, scale=2.0, heads=((0, 1), (2, 2), (1, 0)), task="antonym"):
    split = load_task(task).split(0)
    pr = encode_prompts(model, sample_prompts(split.train, style="few_shot", demo_pool=split.train, shots=3, n=5))
    means = mean_head_activations(model, pr, progress=False)
    return InstructionVector.build(model, means, heads=list(heads), layer=layer, scale=scale, task=task)


@torch.no_grad()
def by_hand(model, v, gemma):
    """Final RMS norm and unembedding written out: g * v / rms(v), then W_U."""
    norm = model.final_norm()
    gain = (1.0 + norm.weight.float()) if gemma else norm.weight.float()
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    x = v.float() / torch.sqrt(v.float().pow(2).mean() + eps) * gain
    return model.model.get_output_embeddings().weight.float() @ x


@pytest.mark.parametrize("kind", ["llama", "gemma"])
def test_decode_matches_a_direct_unembedding(kind, tiny_llama, tiny_gemma):
    model = {"llama": tiny_llama, "gemma": tiny_gemma}[kind]
    v = torch.randn(model.geometry.d_model, generator=torch.Generator().manual_seed(1))
    dec = decode_vector(model, v, top=7)
    want = by_hand(model, v, kind == "gemma")
    assert torch.allclose(dec.logits, want, atol=1e-4)
    top = torch.argsort(want, descending=True)[:7]
    assert [t for t, _ in dec.promoted] == [model.tokenizer.decode([int(i)]) for i in top]
    assert [x for _, x in dec.promoted] == pytest.approx(want[top].tolist(), abs=1e-4)
    assert dec.suppressed[0][1] == pytest.approx(float(want.min()), abs=1e-4)
    assert torch.allclose(dec.direct, model.model.get_output_embeddings().weight.float() @ v, atol=1e-4)
    df = dec.to_pandas()
    assert list(df["kind"].unique()) == ["promoted", "suppressed"] and len(df) == 14
    assert "promotes" in repr(dec) and dec.plot().data


def test_composition_is_linear_before_the_norm_and_the_norm_removes_length(tiny_llama):
    gen = torch.Generator().manual_seed(2)
    a, b = (torch.randn(tiny_llama.geometry.d_model, generator=gen) for _ in range(2))
    da, db, dab = (decode_vector(tiny_llama, x) for x in (a, b, a + b))
    assert torch.allclose(dab.direct, da.direct + db.direct, atol=1e-4)
    assert not torch.allclose(dab.logits, da.logits + db.logits, atol=1e-2)  # the norm is not linear
    assert torch.allclose(decode_vector(tiny_llama, 3.0 * a).logits, da.logits, atol=1e-3)
    assert torch.allclose(direct_logits(tiny_llama, torch.stack([a, b])), torch.stack([da.direct, db.direct]), atol=1e-4)


def test_logit_lens_at_the_last_layer_is_the_model_with_the_vector_added_there(tiny_llama):
    prompts = prompts_of_mixed_lengths(tiny_llama, n=6, style="zero_shot")
    v = torch.randn(tiny_llama.geometry.d_model, generator=torch.Generator().manual_seed(3))
    last = tiny_llama.geometry.n_layers - 1
    lens = logit_lens(tiny_llama, v, prompts, scale=1.5, batch_size=4)
    assert lens.layers == list(range(tiny_llama.geometry.n_layers))
    base = score_prompts(tiny_llama, prompts)
    steered = score_prompts(tiny_llama, prompts, vector=v, layer=last, scale=1.5)
    want = float((steered.probs.log() - base.probs.log()).mean())
    assert lens.answer_gain[last] == pytest.approx(want, abs=1e-3)
    assert len(set(lens.answer_gain)) > 1  # the earlier layers read other residual streams
    assert all(g[0] >= g[-1] for g in lens.gains) and len(lens.to_pandas()) == 5 * len(lens.layers)
    assert "LogitLens" in repr(lens) and lens.plot().data
    with pytest.raises(InputError, match="out of range"):
        logit_lens(tiny_llama, v, prompts, layers=[99])


def test_readout_projection_closed_forms(tiny_llama):
    v = torch.randn(tiny_llama.geometry.d_model, generator=torch.Generator().manual_seed(4))
    gain = tiny_llama.final_norm().weight.detach().float()
    u = tiny_llama.model.get_output_embeddings().weight.detach().float()[17] * gain
    one = readout_projection(tiny_llama, v, [17])
    assert torch.allclose(one, (u @ v) / (u @ u) * u, atol=1e-4)
    # enough tokens span the whole residual stream: the projection is the vector itself
    many = readout_projection(tiny_llama, v, list(range(3 * tiny_llama.geometry.d_model)))
    assert torch.allclose(many, v, atol=1e-3)
    with pytest.raises(InputError, match="at least one token"):
        readout_projection(tiny_llama, v, [])


def test_top_token_reconstruction_rows(tiny_llama):
    iv = tiny_iv(tiny_llama)
    prompts = zero_shot_prompts(tiny_llama, "antonym", "test", n=8)
    rec = top_token_reconstruction(tiny_llama, iv, prompts, n_tokens=(1, 5, 200))
    assert [r["n_tokens"] for r in rec.rows] == [0, 1, 5, 200, None]
    full = score_prompts(tiny_llama, prompts, vector=iv.vector, layer=iv.layer, scale=iv.scale)
    assert rec.rows[-1]["top1"] == pytest.approx(full.accuracy(1))
    assert rec.rows[3]["cosine"] == pytest.approx(1.0, abs=1e-3)  # 200 tokens > d_model span everything
    assert rec.rows[3]["top1"] == pytest.approx(rec.rows[-1]["top1"])
    assert 0 < rec.rows[1]["cosine"] < 1 and all(r["lo"] <= r["top1"] <= r["hi"] for r in rec.rows)
    assert "Reconstruction" in repr(rec) and rec.plot().data
    with pytest.raises(InputError, match="no injection layer"):
        top_token_reconstruction(tiny_llama, iv.replace(layer=None), prompts)
    with pytest.raises(InputError, match="n_tokens"):
        top_token_reconstruction(tiny_llama, iv, prompts, n_tokens=(0,))


def test_decode_rejects_bad_input(tiny_llama):
    with pytest.raises(InputError, match="vector"):
        decode_vector(tiny_llama, torch.zeros(5))
    with pytest.raises(InputError, match="non-finite"):
        decode_vector(tiny_llama, torch.full((tiny_llama.geometry.d_model,), float("nan")))
    with pytest.raises(InputError, match="top"):
        decode_vector(tiny_llama, torch.ones(tiny_llama.geometry.d_model), top=0)


@pytest.mark.slow
def test_on_smollm2_the_lens_and_the_decoding_agree_with_the_model(smollm2):
    """On the real model: the logit lens after the last layer is the model's own output with the
    vector added there, and decoding is the final RMS norm and the unembedding written out."""
    prompts = zero_shot_prompts(smollm2, "capitalize", "test", n=4)
    v = torch.randn(smollm2.geometry.d_model, generator=torch.Generator().manual_seed(0))
    last = smollm2.geometry.n_layers - 1
    lens = logit_lens(smollm2, v, prompts, layers=[last], scale=2.0)
    base = score_prompts(smollm2, prompts)
    steered = score_prompts(smollm2, prompts, vector=v, layer=last, scale=2.0)
    assert lens.answer_gain[0] == pytest.approx(float((steered.probs.log() - base.probs.log()).mean()), abs=1e-3)
    assert torch.allclose(decode_vector(smollm2, v).logits, by_hand(smollm2, v, gemma=False), atol=1e-3)
