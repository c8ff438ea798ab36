import pytest
import torch

from ivkit import InstructionVector, mean_head_activations
from ivkit.analysis.noise import iv_cosines, rebuild_cosine
from ivkit.core.errors import InputError
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.core.tasks import load_task


def test_rebuild_cosine_uses_other_queries_and_is_a_plain_cosine(tiny_llama):
    task = load_task("antonym")
    split = task.split(0)
    used = sample_prompts(split.train, style="few_shot", demo_pool=split.train, shots=3, n=5, seed=0)
    means = mean_head_activations(tiny_llama, encode_prompts(tiny_llama, used), progress=False)
    iv = InstructionVector.build(tiny_llama, means, heads=[(0, 1), (2, 2)])
    exclude = [p.query.input for p in used]
    got = rebuild_cosine(tiny_llama, task, iv, exclude=exclude, n=5, shots=3)
    # the same computation by hand, on the queries left
    left = [e for e in split.train if e.input not in set(exclude)]
    other = sample_prompts(left, style="few_shot", demo_pool=split.train, shots=3, n=5, seed=0, stream=31)
    assert not {p.query.input for p in other} & set(exclude)
    again = InstructionVector.build(tiny_llama, mean_head_activations(tiny_llama, encode_prompts(tiny_llama, other),
                                                                      progress=False), heads=iv.heads)
    assert got == pytest.approx(float(torch.nn.functional.cosine_similarity(again.vector, iv.vector, dim=0)), abs=1e-6)
    assert got < 1.0 - 1e-6
    with pytest.raises(InputError, match="no training query"):
        rebuild_cosine(tiny_llama, task, iv, exclude=[e.input for e in split.train])


def test_iv_cosines_is_symmetric_with_ones_on_the_diagonal(tiny_llama):
    a = InstructionVector(torch.tensor([1.0, 0.0]), [], [], torch.zeros(0, 1), torch.zeros(0, 2))
    b = InstructionVector(torch.tensor([1.0, 1.0]), [], [], torch.zeros(0, 1), torch.zeros(0, 2))
    df = iv_cosines({"a": a, "b": b})
    assert df.loc["a", "a"] == pytest.approx(1.0) and df.loc["a", "b"] == pytest.approx(2 ** -0.5)
    assert df.loc["b", "a"] == df.loc["a", "b"]
