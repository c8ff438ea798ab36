import pytest
import torch

from ivkit.activations import residual_alignment, residual_stream
from ivkit.core.errors import InputError
from ivkit.models.hooks import record_residual

from .conftest import prompts_of_mixed_lengths


def test_residual_stream_batched_equals_one_prompt_at_a_time(tiny_llama):
    prompts = prompts_of_mixed_lengths(tiny_llama, n=5)
    got = residual_stream(tiny_llama, prompts, batch_size=5)
    for i in range(len(prompts)):
        with record_residual(tiny_llama) as res:
            tiny_llama.forward(tiny_llama.make_batch([prompts.input_ids[i]]))
        assert torch.allclose(got[i, 1], res[1][0].float(), atol=1e-4)


def test_alignment_raw_and_centred_match_cosines_of_the_residual_stream(tiny_llama):
    """Checked against an independent path: the stored residual stream, cosines taken by hand."""
    prompts = prompts_of_mixed_lengths(tiny_llama, n=6)
    g = tiny_llama.geometry
    v = torch.randn(g.d_model, generator=torch.Generator().manual_seed(1))
    res = residual_stream(tiny_llama, prompts).double()
    center = res.mean(0)

    def by_hand(h):
        return torch.nn.functional.cosine_similarity(h, v.double()[None, None], dim=-1).mean(0)

    raw = torch.tensor(residual_alignment(tiny_llama, prompts, v, batch_size=4), dtype=torch.float64)
    centred = torch.tensor(residual_alignment(tiny_llama, prompts, v, batch_size=4, center=center.float()),
                           dtype=torch.float64)
    assert torch.allclose(raw, by_hand(res), atol=1e-4)
    assert torch.allclose(centred, by_hand(res - center), atol=1e-4)
    assert not torch.allclose(raw, centred, atol=1e-3)


def test_centre_of_the_wrong_shape_is_refused(tiny_llama):
    prompts = prompts_of_mixed_lengths(tiny_llama, n=2)
    v = torch.ones(tiny_llama.geometry.d_model)
    with pytest.raises(InputError, match="center has shape"):
        residual_alignment(tiny_llama, prompts, v, center=torch.zeros(3, 4))
