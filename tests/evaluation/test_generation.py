"""Greedy generation through every backend, with and without an IV."""

import pytest
import torch

import ivkit
from ivkit import InstructionVector
from ivkit.activations import head_activations
from ivkit.core.errors import BackendError, IncompatibleVectorError
from ivkit.evaluation.generation import generate_ids
from ivkit.models.backends import BACKENDS

from ..conftest import prompts_of_mixed_lengths
from ..models.test_backends import _load

PROMPTS = ["Q: lantern\nA:", "Q: a much longer question here\nA:"]


@pytest.fixture(scope="module")
def trio(tokenizer):
    return {b: _load("llama", tokenizer, b) for b in BACKENDS}


@pytest.fixture(scope="module")
def iv(trio):
    ref = trio["torch"]
    means = head_activations(ref, prompts_of_mixed_lengths(ref, n=4)).mean(0)
    return InstructionVector.build(ref, means, heads=[(0, 1), (1, 2), (2, 0)], layer=1, scale=4.0)


@torch.no_grad()
def _hf_generate(model, prompt: str, n: int) -> list[int]:
    ids = torch.tensor([model.encode(prompt)])
    out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                               do_sample=False, pad_token_id=model.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_matches_kv_cached_generation_under_iv_apply(trio, iv):
    """The IV at the last prompt token and every new token: what the model's own cached generate
    does under iv.apply (torch backend), one prompt at a time and batched with left padding."""
    ref = trio["torch"]
    plain = [_hf_generate(ref, p, 6) for p in PROMPTS]
    with iv.apply(ref):
        steered = [_hf_generate(ref, p, 6) for p in PROMPTS]
    assert plain != steered  # the IV changes what is generated
    assert generate_ids(ref, PROMPTS, max_new_tokens=6) == plain
    assert generate_ids(ref, PROMPTS, iv=iv, max_new_tokens=6) == steered
    assert generate_ids(ref, PROMPTS, iv=iv, max_new_tokens=6, batch_size=1) == steered


def test_same_tokens_through_every_backend(trio, iv):
    want = generate_ids(trio["torch"], PROMPTS, iv=iv, max_new_tokens=5)
    for b in ("transformer-lens", "nnsight"):
        assert generate_ids(trio[b], PROMPTS, iv=iv, max_new_tokens=5) == want, b
    texts = ivkit.generate(trio["nnsight"], PROMPTS, iv=iv, max_new_tokens=5, stop=())
    assert texts == [trio["torch"].tokenizer.decode(w, skip_special_tokens=True) for w in want]


def test_direct_hf_call_under_an_nnsight_intervention_is_refused(trio, iv):
    nn = trio["nnsight"]
    ids = torch.tensor([nn.encode(PROMPTS[0])])
    with iv.apply(nn):
        with pytest.raises(BackendError, match="called directly.*ivkit.generate"):
            nn.model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
        nn.forward(nn.make_batch([ids[0].tolist()]))  # through the backend: fine
    nn.model(input_ids=ids)  # nothing attached any more: direct calls are allowed again


def test_bad_arguments(trio, iv):
    m = trio["torch"]
    with pytest.raises(ValueError, match="iv or vector"):
        ivkit.generate(m, PROMPTS, iv=iv, vector=iv.vector)
    with pytest.raises(ValueError, match="needs layer"):
        ivkit.generate(m, PROMPTS, vector=iv.vector)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ivkit.generate(m, PROMPTS, max_new_tokens=0)
    with pytest.raises(IncompatibleVectorError):
        ivkit.generate(m, PROMPTS, vector=torch.zeros(3), layer=1)


def test_heads_injection_matches_kv_cached_generation(trio, iv):
    """With injection='heads' the heads are set at the last prompt token and every new token:
    what the model's own cached generate does under iv.apply."""
    import dataclasses

    ref = trio["torch"]
    hv = dataclasses.replace(iv, injection="heads", layer=None)
    plain = [_hf_generate(ref, p, 6) for p in PROMPTS]
    with hv.apply(ref):
        steered = [_hf_generate(ref, p, 6) for p in PROMPTS]
    assert plain != steered
    assert generate_ids(ref, PROMPTS, iv=hv, max_new_tokens=6) == steered
    assert generate_ids(trio["nnsight"], PROMPTS, iv=hv, max_new_tokens=6) == steered
