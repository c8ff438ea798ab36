import json

import pytest
import torch

from ivkit import InstructionVector, mean_head_activations
from ivkit.core.errors import ArtifactError, IncompatibleVectorError
from ivkit.models.hooks import add_to_residual
from ivkit.vectors import head_contributions, random_like

from ..conftest import prompts_of_mixed_lengths


@pytest.fixture(scope="module")
def llama_means(tiny_llama):
    return mean_head_activations(tiny_llama, prompts_of_mixed_lengths(tiny_llama, n=5))


@pytest.fixture(scope="module")
def gemma_means(tiny_gemma):
    return mean_head_activations(tiny_gemma, prompts_of_mixed_lengths(tiny_gemma, n=5))


def _fake_aie(model, seed=0):
    g = model.geometry
    return torch.rand(g.n_layers, g.n_heads, generator=torch.Generator().manual_seed(seed))


def test_vector_is_the_sum_of_W_O_slices(tiny_llama, llama_means):
    aie = _fake_aie(tiny_llama)
    iv = InstructionVector.build(tiny_llama, llama_means, aie, k=4)
    g = tiny_llama.geometry
    # Hand computation from the weight matrix: W_O[:, head slice] @ mean.
    want = torch.zeros(g.d_model)
    for layer, head in iv.heads:
        W = tiny_llama.attn_out_proj(layer).weight
        want += W[:, head * g.d_head:(head + 1) * g.d_head] @ llama_means[layer, head]
    assert torch.allclose(iv.vector, want, atol=1e-5)
    # Top-k are the largest AIE, largest first.
    top = torch.topk(aie.flatten(), 4).indices.tolist()
    assert iv.heads == [(i // g.n_heads, i % g.n_heads) for i in top]
    assert iv.head_aie == pytest.approx(sorted(aie.flatten().tolist(), reverse=True)[:4])


def test_gemma_linearized_post_norm_adds_up_to_the_layer_output(tiny_gemma, gemma_means):
    """Heads are 4 x 32 = 128 wide, d_model 48; the post-attention norm is linearised so that a
    layer's head terms sum exactly to norm(W_O mean)."""
    g = tiny_gemma.geometry
    layer = 1
    all_heads = [(layer, h) for h in range(g.n_heads)]
    contrib = head_contributions(tiny_gemma, gemma_means, all_heads, post_norm="linearized")
    assert contrib.shape == (g.n_heads, g.d_model)
    with torch.no_grad():
        full = tiny_gemma.attn_out_proj(layer)(gemma_means[layer].reshape(1, -1))
        want = tiny_gemma.post_attn_norm(layer)(full)[0]
    assert torch.allclose(contrib.sum(0), want, atol=1e-5)
    raw = head_contributions(tiny_gemma, gemma_means, all_heads, post_norm="ignore")
    assert torch.allclose(raw.sum(0), full[0], atol=1e-5)
    assert not torch.allclose(raw, contrib, atol=1e-3)
    with pytest.raises(ValueError, match="post_norm"):
        head_contributions(tiny_gemma, gemma_means, all_heads, post_norm="other")


def test_save_load_roundtrip(tmp_path, tiny_llama, llama_means):
    iv = InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=3, layer=1, task="antonym",
                                 seed=7, template={"query": "Q: {input}\nA:"})
    iv = iv.replace(scale=2.5)
    iv.save(tmp_path / "iv")
    side = json.loads((tmp_path / "iv" / "iv.json").read_text())
    for key in ("model", "layer", "heads", "task", "template", "seed", "ivkit_version"):
        assert key in side
    assert side["model"]["id"] == "tiny-llama" and side["model"]["config_hash"] == tiny_llama.config_hash()
    back = InstructionVector.load(tmp_path / "iv", model=tiny_llama)
    assert torch.equal(back.vector, iv.vector) and torch.equal(back.head_means, iv.head_means)
    assert torch.equal(back.mean_activations, iv.mean_activations)
    assert back.heads == iv.heads and back.head_aie == pytest.approx(iv.head_aie)
    assert back.layer == 1 and back.scale == 2.5 and back.meta["task"] == "antonym" and back.meta["seed"] == 7
    assert back.cosine(iv) == pytest.approx(1.0)
    assert list(back.to_pandas().columns) == ["layer", "head", "aie", "contribution_norm"]


def test_vector_from_another_model_is_refused(tmp_path, tiny_llama, tiny_gemma, llama_means):
    iv = InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=2, layer=0)
    iv.save(tmp_path / "iv")
    with pytest.raises(IncompatibleVectorError, match="does not fit 'tiny-gemma3'.*architecture llama vs gemma3_text"):
        InstructionVector.load(tmp_path / "iv", model=tiny_gemma)
    with pytest.raises(IncompatibleVectorError):
        with iv.apply(tiny_gemma):
            pass


@pytest.mark.parametrize("breakage,match", [
    ("no_dir", "iv.safetensors is missing"),
    ("bad_json", "not valid JSON"),
    ("bad_format", "format"),
    ("bad_tensors", "not a readable safetensors"),
    ("count", "lists 2 heads but the tensors hold 3"),
    ("other_save", "not the tensor file .*interrupted or concurrent save"),
    ("no_heads", "malformed .*'heads' list"),
])
def test_broken_iv_directories(tmp_path, tiny_llama, llama_means, breakage, match):
    d = tmp_path / "iv"
    InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=3).save(d)
    js = d / "iv.json"
    side = json.loads(js.read_text())
    if breakage == "no_dir":
        d = tmp_path / "elsewhere"
    elif breakage == "bad_json":
        js.write_text("{not json")
    elif breakage == "bad_format":
        side["format"] = "other/9"
        js.write_text(json.dumps(side))
    elif breakage == "bad_tensors":
        (d / "iv.safetensors").write_bytes(b"\x80\x04pickle? no")
    elif breakage == "count":
        side["heads"] = side["heads"][:2]
        side.pop("tensors_sha256")  # an older sidecar, without the digest: the count check still holds
        js.write_text(json.dumps(side))
    elif breakage == "other_save":  # the tensors of another save next to this sidecar
        InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=4).save(tmp_path / "b")
        (d / "iv.safetensors").write_bytes((tmp_path / "b" / "iv.safetensors").read_bytes())
    elif breakage == "no_heads":
        del side["heads"]
        js.write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match=match):
        InstructionVector.load(d)


@torch.no_grad()
def test_apply_changes_logits_and_scale_zero_does_not(tiny_model):
    means = mean_head_activations(tiny_model, prompts_of_mixed_lengths(tiny_model, n=4))
    iv = InstructionVector.build(tiny_model, means, _fake_aie(tiny_model), k=3, layer=1)
    batch = tiny_model.make_batch(prompts_of_mixed_lengths(tiny_model, n=3, style="zero_shot").input_ids)
    clean = tiny_model.forward(batch)
    with iv.apply(tiny_model):
        steered = tiny_model.forward(batch)
    with iv.apply(tiny_model, scale=0.0):
        zero = tiny_model.forward(batch)
    assert (steered - clean).abs().max() > 1e-3 and torch.equal(zero, clean)
    iv = iv.replace(scale=2.0)  # apply() uses the IV's own scale by default
    with iv.apply(tiny_model):
        twice = tiny_model.forward(batch)
    with add_to_residual(tiny_model, 1, 2.0 * iv.vector):
        by_hand = tiny_model.forward(batch)
    assert torch.allclose(twice, by_hand, atol=1e-6) and not torch.allclose(twice, steered)
    with pytest.raises(ValueError, match="no injection layer"):
        with iv.replace(layer=None).apply(tiny_model):
            pass


def test_random_control_has_the_ivs_norm_and_is_seeded(tiny_llama, llama_means):
    iv = InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=3)
    r1, r2, r3 = random_like(iv, 0), random_like(iv, 0), random_like(iv, 1)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    assert r1.norm().item() == pytest.approx(iv.norm, rel=1e-5)


def test_build_validates_inputs(tiny_llama, llama_means, tiny_gemma):
    with pytest.raises(ValueError, match="outside"):
        InstructionVector.build(tiny_llama, llama_means, heads=[(99, 0)])
    with pytest.raises(IncompatibleVectorError):
        InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_gemma))
    with pytest.raises(ValueError, match="k must be"):
        InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=0)
    iv = InstructionVector.build(tiny_llama, llama_means, heads=[(0, 1), (2, 3)])
    assert iv.heads == [(0, 1), (2, 3)]


@torch.no_grad()
def test_heads_injection_sets_each_head_to_scale_times_its_mean(tiny_model):
    """injection='heads' against plain forward pre-hooks on each layer's output projection that
    overwrite the top heads' slices at the last token with scale * mean."""
    g = tiny_model.geometry
    means = mean_head_activations(tiny_model, prompts_of_mixed_lengths(tiny_model, n=4))
    iv = InstructionVector.build(tiny_model, means, heads=[(0, 1), (2, 3), (2, 0)], layer=1, injection="heads",
                                 scale=2.5)
    batch = tiny_model.make_batch(prompts_of_mixed_lengths(tiny_model, n=3, style="zero_shot").input_ids)
    clean = tiny_model.forward(batch)
    with iv.apply(tiny_model):
        ours = tiny_model.forward(batch)

    def hook_for(layer):
        def pre(module, args):
            x = args[0].clone()
            for l, h in iv.heads:
                if l == layer:
                    x[:, -1, h * g.d_head:(h + 1) * g.d_head] = 2.5 * means[l, h]
            return (x,)
        return pre

    handles = [tiny_model.attn_out_proj(l).register_forward_pre_hook(hook_for(l)) for l in (0, 2)]
    try:
        theirs = tiny_model.forward(batch)
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(ours, theirs, atol=1e-5) and (ours - clean).abs().max() > 1e-3
    # a given layer means residual injection there; the heads injection takes no layer
    with iv.apply(tiny_model, layer=1):
        resid = tiny_model.forward(batch)
    with add_to_residual(tiny_model, 1, 2.5 * iv.vector):
        assert torch.allclose(resid, tiny_model.forward(batch), atol=1e-6)
    with pytest.raises(ValueError, match="leave layer out"):
        with iv.apply(tiny_model, layer=1, injection="heads"):
            pass
    with pytest.raises(ValueError, match="injection must be one of"):
        with iv.apply(tiny_model, injection="everywhere"):
            pass


def test_injection_survives_save_and_load_and_a_bad_one_is_refused(tmp_path, tiny_llama, llama_means):
    iv = InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=3, injection="heads", scale=3.0)
    iv.save(tmp_path / "iv")
    back = InstructionVector.load(tmp_path / "iv", tiny_llama)
    assert back.injection == "heads" and back.layer is None and back.scale == 3.0
    assert "injection='heads'" in repr(back)
    side = json.loads((tmp_path / "iv" / "iv.json").read_text())
    side["injection"] = "sideways"
    (tmp_path / "iv" / "iv.json").write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match="injection 'sideways'"):
        InstructionVector.load(tmp_path / "iv")
    del side["injection"]  # files written before injections existed are residual
    (tmp_path / "iv" / "iv.json").write_text(json.dumps(side))
    assert InstructionVector.load(tmp_path / "iv").injection == "residual"


def test_random_directions_keep_every_norm_and_the_residual_control(tiny_llama, llama_means):
    iv = InstructionVector.build(tiny_llama, llama_means, _fake_aie(tiny_llama), k=4, layer=1)
    c = iv.with_random_directions(7)
    assert torch.equal(c.vector, random_like(iv, 7))  # the residual control is unchanged
    assert torch.allclose(c.head_means.norm(dim=-1), iv.head_means.norm(dim=-1), rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(c.head_means, iv.head_means, dim=-1)
    assert cos.abs().max() < 0.9 and c.heads == iv.heads and c.layer == iv.layer
    assert torch.equal(iv.with_random_directions(7).head_means, c.head_means)
    assert not torch.equal(iv.with_random_directions(8).head_means, c.head_means)
