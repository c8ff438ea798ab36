import torch

from ivkit.models.backends.torch_backend import replace_block_output as _replace_block_output
from ivkit.models.hooks import add_to_residual, patch_head_outputs, patch_heads, record_head_outputs, record_residual

from ..conftest import prompts_of_mixed_lengths


@torch.no_grad()
def test_record_shapes_and_values_match_a_plain_hook(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=3)
    batch = tiny_model.make_batch(enc.input_ids)
    g = tiny_model.geometry
    seen = {}
    h = tiny_model.attn_out_proj(1).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    try:
        with record_head_outputs(tiny_model) as rec:
            tiny_model.forward(batch)
    finally:
        h.remove()
    z = rec.stack()
    assert z.shape == (3, g.n_layers, g.n_heads, g.d_head)
    assert torch.equal(z[:, 1].reshape(3, -1), seen["x"][:, -1])


@torch.no_grad()
def test_patching_a_head_with_its_own_activation_changes_nothing(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=3)
    batch = tiny_model.make_batch(enc.input_ids)
    with record_head_outputs(tiny_model) as rec:
        clean = tiny_model.forward(batch, logits_to_keep=0)
    z = rec.stack()
    g = tiny_model.geometry
    all_heads = torch.ones(g.n_heads, dtype=torch.bool)
    with patch_head_outputs(tiny_model, {l: (all_heads, z[:, l]) for l in range(g.n_layers)}):
        again = tiny_model.forward(batch, logits_to_keep=0)
    assert torch.equal(clean, again)


@torch.no_grad()
def test_patching_a_head_changes_only_the_last_position(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=2)
    batch = tiny_model.make_batch(enc.input_ids)
    clean = tiny_model.forward(batch, logits_to_keep=0)
    g = tiny_model.geometry
    with patch_heads(tiny_model, {(0, 1): torch.full((g.d_head,), 3.0)}):
        patched = tiny_model.forward(batch, logits_to_keep=0)
    assert torch.equal(clean[:, :-1], patched[:, :-1])
    assert (clean[:, -1] - patched[:, -1]).abs().max() > 1e-3


@torch.no_grad()
def test_add_to_residual_changes_logits_at_the_last_position(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=2)
    batch = tiny_model.make_batch(enc.input_ids)
    clean = tiny_model.forward(batch, logits_to_keep=0)
    v = torch.randn(tiny_model.geometry.d_model, generator=torch.Generator().manual_seed(0))
    for layer in range(tiny_model.geometry.n_layers):
        with add_to_residual(tiny_model, layer, v, scale=2.0):
            steered = tiny_model.forward(batch, logits_to_keep=0)
        assert torch.equal(clean[:, :-1], steered[:, :-1])
        assert (clean[:, -1] - steered[:, -1]).abs().max() > 1e-3, f"layer {layer}: the hook did nothing"
    with add_to_residual(tiny_model, 0, v, scale=0.0):
        assert torch.equal(tiny_model.forward(batch, logits_to_keep=0), clean)
    # Hooks are gone after the with-block.
    assert torch.equal(tiny_model.forward(batch, logits_to_keep=0), clean)


@torch.no_grad()
def test_residual_hook_adds_exactly_the_vector(tiny_llama):
    batch = tiny_llama.make_batch([tiny_llama.encode("Q: hot\nA:")])
    v = torch.randn(tiny_llama.geometry.d_model)
    with record_residual(tiny_llama) as before:
        tiny_llama.forward(batch)
    # Record after our hook (registered later, runs later) to see the edited output.
    with add_to_residual(tiny_llama, 1, v, scale=0.5), record_residual(tiny_llama) as after:
        tiny_llama.forward(batch)
    assert torch.allclose(after[1] - before[1], 0.5 * v[None], atol=1e-5)
    assert torch.equal(after[0], before[0])


def test_block_hook_edits_tuple_outputs_too():
    """Older transformers return tuples from decoder blocks; the edit must reach them."""
    class TupleBlock(torch.nn.Module):
        def forward(self, x):
            return (x * 1.0, None)

    block = TupleBlock()
    h = block.register_forward_hook(lambda m, a, out: _replace_block_output(out, out[0] + 1))
    out = block(torch.zeros(1, 2, 3))
    h.remove()
    assert isinstance(out, tuple) and torch.equal(out[0], torch.ones(1, 2, 3)) and out[1] is None


@torch.no_grad()
def test_vector_is_added_at_every_generated_token(tiny_llama):
    ids = tiny_llama.make_batch([tiny_llama.encode("Q: hot\nA:")])
    v = torch.randn(tiny_llama.geometry.d_model, generator=torch.Generator().manual_seed(1)) * 5
    calls = []
    h = tiny_llama.block(1).register_forward_hook(lambda m, a, out: calls.append(out.shape[1]))
    gen_kwargs = dict(input_ids=ids.input_ids, attention_mask=ids.attention_mask, max_new_tokens=4,
                      do_sample=False, pad_token_id=tiny_llama.pad_token_id, output_scores=True,
                      return_dict_in_generate=True)
    try:
        plain = tiny_llama.model.generate(**gen_kwargs)
        calls.clear()
        with add_to_residual(tiny_llama, 1, v):
            steered = tiny_llama.model.generate(**gen_kwargs)
    finally:
        h.remove()
    assert calls[0] == ids.input_ids.shape[1] and calls[1:] == [1, 1, 1]  # prompt, then one token per step
    for s_plain, s_steer in zip(plain.scores, steered.scores):
        assert (s_plain - s_steer).abs().max() > 1e-3  # every step was steered


@torch.no_grad()
def test_patching_heads_over_a_slice_of_positions_matches_a_plain_hook(tiny_model):
    """patch_heads(positions=slice(-2, None)) against a plain forward pre-hook on the output
    projection that writes the same values into the same slices."""
    enc = prompts_of_mixed_lengths(tiny_model, n=3)
    batch = tiny_model.make_batch(enc.input_ids)
    g = tiny_model.geometry
    val = torch.linspace(-2, 2, g.d_head)
    with patch_heads(tiny_model, {(1, 2): val}, positions=slice(-2, None)):
        ours = tiny_model.forward(batch, logits_to_keep=0)

    def pre(module, args):
        x = args[0].clone()
        x[:, -2:, 2 * g.d_head:3 * g.d_head] = val
        return (x,)

    handle = tiny_model.attn_out_proj(1).register_forward_pre_hook(pre)
    try:
        theirs = tiny_model.forward(batch, logits_to_keep=0)
    finally:
        handle.remove()
    clean = tiny_model.forward(batch, logits_to_keep=0)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.equal(ours[:, :-2], clean[:, :-2]) and (ours[:, -2:] - clean[:, -2:]).abs().max() > 1e-3
