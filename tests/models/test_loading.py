import pytest
import torch

import ivkit
from ivkit import load_model
from ivkit.core.arch import ARCHITECTURES, ArchSpec, register_architecture
from ivkit.core.errors import ModelLoadError, UnknownArchitectureError
from ivkit.models.hooks import record_head_outputs
from ivkit.models.model import length_batches

from ..conftest import ALL_KINDS, make_tiny, prompts_of_mixed_lengths


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_geometry_of_every_registered_family(kind, tokenizer):
    hf = make_tiny(kind, len(tokenizer))
    ivm = load_model(hf, tokenizer, name=f"tiny-{kind}")
    g = ivm.geometry
    cfg = hf.config
    assert g.n_layers == cfg.num_hidden_layers == len(ivm.blocks)
    assert g.n_heads == cfg.num_attention_heads
    assert g.d_model == cfg.hidden_size
    # The projection's input really is n_heads * d_head wide: run it and look.
    with record_head_outputs(ivm) as rec:
        ivm.forward(ivm.make_batch([ivm.encode("Q: hot\nA:")]))
    assert rec.stack().shape == (1, g.n_layers, g.n_heads, g.d_head)
    assert ivm.model_type in ARCHITECTURES


def test_gemma3_heads_wider_than_residual(tiny_gemma):
    g = tiny_gemma.geometry
    assert g.n_heads * g.d_head == 128 and g.d_model == 48
    assert tiny_gemma.post_attn_norm(0) is not None


def test_unknown_architecture_names_class_and_fix(tokenizer):
    import transformers as tf

    cfg = tf.OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                       num_attention_heads=4, word_embed_proj_dim=32)
    opt = tf.OPTForCausalLM(cfg).eval()
    with pytest.raises(UnknownArchitectureError) as e:
        load_model(opt, tokenizer)
    assert "OPTForCausalLM" in str(e.value) and "register_architecture" in str(e.value)

    # Following the message's advice makes it work.
    register_architecture("opt", ArchSpec(layers="model.decoder.layers", attn_out_proj="self_attn.out_proj",
                                          final_norm="model.decoder.final_layer_norm"))
    try:
        ivm = load_model(opt, tokenizer)
        assert ivm.geometry.n_heads == 4 and ivm.geometry.d_head == 8
        with pytest.raises(ValueError, match="already registered"):
            register_architecture("opt", ArchSpec("a", "b", "c"))
    finally:
        del ARCHITECTURES["opt"]


def test_wrong_spec_paths_are_reported(tokenizer):
    hf = make_tiny("llama", len(tokenizer))
    with pytest.raises(UnknownArchitectureError, match="does not have the modules"):
        ivkit.IVModel(hf, tokenizer, spec=ArchSpec(layers="model.nope", attn_out_proj="x", final_norm="y"))
    with pytest.raises(UnknownArchitectureError, match="cannot be split"):
        ivkit.IVModel(hf, tokenizer, spec=ArchSpec(layers="model.layers", attn_out_proj="mlp.down_proj",
                                                   final_norm="model.norm"))


def test_load_errors(tokenizer, tmp_path):
    hf = make_tiny("llama", len(tokenizer))
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(hf)
    with pytest.raises(ModelLoadError, match="no such .gguf"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_model(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelLoadError, match="alias"):
        load_model("nobody/no-such-model-xyz")  # offline: the hub is unreachable
    with pytest.raises(ModelLoadError):
        load_model(42)


def test_load_from_directory_matches_object(tiny_llama, tiny_llama_dir):
    again = load_model(str(tiny_llama_dir))
    batch = tiny_llama.make_batch([tiny_llama.encode("Q: cold\nA:")])
    with torch.no_grad():
        assert torch.allclose(again.forward(batch), tiny_llama.forward(batch), atol=1e-6)
    assert again.config_hash() == tiny_llama.config_hash()
    assert load_model(again) is again


def test_make_batch_left_pads_with_positions(tiny_llama):
    b = tiny_llama.make_batch([[5, 6, 7], [8]])
    assert b.input_ids[1, -1] == 8 and b.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    with pytest.raises(ValueError):
        tiny_llama.make_batch([])


def test_batched_forward_equals_single(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model)
    with torch.no_grad():
        together = tiny_model.forward(tiny_model.make_batch(enc.input_ids))[:, -1]
        for i, ids in enumerate(enc.input_ids):
            alone = tiny_model.forward(tiny_model.make_batch([ids]))[0, -1]
            assert torch.allclose(together[i], alone, atol=1e-5), (i, (together[i] - alone).abs().max())


def test_length_batches_cover_everything_once():
    b = length_batches([5, 1, 3, 3, 9], 2)
    assert sorted(i for chunk in b for i in chunk) == [0, 1, 2, 3, 4]
    assert all(len(c) <= 2 for c in b)
