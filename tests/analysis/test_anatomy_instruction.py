import pytest
import torch

from ivkit import indirect_effects, mean_head_activations
from ivkit.analysis.anatomy_instruction import compare_ivs, default_wrong_instruction, instruction_iv
from ivkit.core.errors import InputError, TaskError
from ivkit.core.prompts import encode_prompts, make_prompt, sample_prompts
from ivkit.core.stats import jaccard
from ivkit.core.tasks import TASK_INSTRUCTIONS, load_task

from .test_anatomy_decode import tiny_iv

SMALL = dict(mean_prompts=6, trials=3, k=3, scales=(1.0, 2.0), sweep_prompts=5, filter_correct=False)


@pytest.mark.parametrize("corrupt", ["wrong", "empty"])
def test_instruction_iv_patches_instruction_means_into_fitting_corrupted_prompts(tiny_llama, corrupt):
    res = instruction_iv(tiny_llama, "capitalize", corrupt=corrupt, **SMALL)
    task = load_task("capitalize")
    clean = sample_prompts(task.split(0).train, style="instruction", instruction=task.instruction, seed=0, stream=1)
    assert clean[0].text.startswith(TASK_INSTRUCTIONS["capitalize"])
    enc = encode_prompts(tiny_llama, clean[:9])
    means = mean_head_activations(tiny_llama, enc.subset(range(6)), progress=False)
    wrong = default_wrong_instruction(task)
    corrupted = [make_prompt(p.query, style="instruction" if corrupt == "wrong" else "zero_shot", instruction=wrong)
                 for p in enc.prompts[6:9]]
    assert corrupted[0].text.startswith(wrong if corrupt == "wrong" else "Q: ")
    naive = indirect_effects(tiny_llama, encode_prompts(tiny_llama, corrupted), means, method="naive", progress=False)
    assert torch.allclose(res.effects.aie, naive.aie, atol=1e-5)
    assert res.iv.heads == [(l, h) for l, h, _ in naive.top_heads(3)]
    m = res.iv.meta
    assert (m["style"], m["corrupt"], m["instruction"]) == ("instruction", corrupt, task.instruction)
    assert m["wrong_instruction"] == (wrong if corrupt == "wrong" else None)
    assert res.iv.layer == res.sweep.best_layer and res.sweep.split == "valid"


def test_instruction_iv_resumes_from_its_directory_and_takes_a_user_instruction(tiny_llama, tmp_path):
    first = instruction_iv(tiny_llama, "capitalize", instruction="Capitalize it.", out=tmp_path / "r", **SMALL)
    assert first.iv.meta["instruction"] == "Capitalize it." and (tmp_path / "r" / "iv.json").exists()
    again = instruction_iv(tiny_llama, "capitalize", instruction="Capitalize it.", out=tmp_path / "r", **SMALL)
    assert again.resumed and torch.equal(again.iv.vector, first.iv.vector) and again.iv.layer == first.iv.layer
    other = instruction_iv(tiny_llama, "capitalize", instruction="Capitalise the word.", out=tmp_path / "r", **SMALL)
    assert not other.resumed and not torch.equal(other.iv.vector, first.iv.vector)


def test_instruction_iv_bad_input(tiny_llama):
    with pytest.raises(InputError, match="corrupt"):
        instruction_iv(tiny_llama, "capitalize", corrupt="shuffled", **SMALL)
    with pytest.raises(InputError, match="own instruction"):
        instruction_iv(tiny_llama, "capitalize", wrong_instruction=TASK_INSTRUCTIONS["capitalize"], **SMALL)
    with pytest.raises(TaskError, match="instruction prompts"):  # a random model answers none right
        instruction_iv(tiny_llama, "capitalize", **{**SMALL, "filter_correct": True})


def test_compare_ivs(tiny_llama):
    a = tiny_iv(tiny_llama, heads=((0, 1), (2, 2), (1, 0)))
    b = tiny_iv(tiny_llama, heads=((2, 2), (0, 1), (1, 3)), layer=2, scale=1.0)
    res = compare_ivs(tiny_llama, "antonym", a, b, n_test=6)
    assert res.jaccard == pytest.approx(jaccard(a.heads, b.heads)) == pytest.approx(0.5)
    assert res.shared == [(0, 1), (2, 2)] and res.cosine == pytest.approx(a.cosine(b))
    assert [(r["layer"], r["scale"]) for r in res.scores.rows[1:]] == [(1, 2.0), (2, 1.0)]
    assert compare_ivs(tiny_llama, "antonym", a, b, k=1, n_test=6).jaccard == 0.0  # (0,1) vs (2,2)
    assert res.summary()["jaccard"] == res.jaccard and "IVComparison" in repr(res) and res.plot().data
    with pytest.raises(InputError, match="k must be"):
        compare_ivs(tiny_llama, "antonym", a, b, k=4)
    with pytest.raises(InputError, match="different names"):
        compare_ivs(tiny_llama, "antonym", a, b, names=("x", "x"))


def test_extract_config_instruction_reaches_the_clean_prompts(tiny_llama):
    from ivkit.pipeline import ExtractConfig, extract

    res = extract(tiny_llama, "capitalize", style="instruction", instruction="Capitalize it.", filter_correct=False,
                  mean_prompts=4, trials=2, sweep=False, progress=False)
    assert res.prompts.mean.prompts[0].text.startswith("Capitalize it.\n\n")
    with pytest.raises(InputError, match="non-empty"):
        ExtractConfig(style="instruction", instruction="  ")
    with pytest.raises(InputError, match="style instruction only"):
        ExtractConfig(instruction="Capitalize it.")
