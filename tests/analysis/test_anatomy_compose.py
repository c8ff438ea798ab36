import math

import pytest
import torch

from ivkit import InstructionVector
from ivkit.analysis.anatomy_baselines import baseline_vectors, baselines_at_best_layer, iv_with_baselines
from ivkit.analysis.anatomy_common import choose_and_test, zero_shot_prompts
from ivkit.analysis.anatomy_compose import compare_composition, compose, iv_difference, iv_scaled, iv_sum
from ivkit.core.errors import IncompatibleVectorError, InputError
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.core.tasks import load_task
from ivkit.evaluation import layer_sweep, score_prompts
from ivkit.models.hooks import record_residual

from .test_anatomy_decode import tiny_iv


def test_compose_is_the_linear_combination_and_merges_shared_heads(tiny_llama):
    a = tiny_iv(tiny_llama, heads=((0, 1), (2, 2)), task="antonym")
    b = tiny_iv(tiny_llama, heads=((2, 2), (1, 3)), task="capitalize")
    c = compose([(1.0, a), (-2.0, b)])
    assert torch.allclose(c.vector, a.vector - 2 * b.vector, atol=1e-5)
    assert c.heads == [(0, 1), (2, 2), (1, 3)]
    assert torch.allclose(c.head_contributions.sum(0), c.vector, atol=1e-4)
    assert torch.allclose(c.head_means[1], a.head_means[1] - 2 * b.head_means[0], atol=1e-5)
    assert c.meta["composition"]["formula"] == "antonym - 2*capitalize" and c.meta["task"] == c.meta["composition"]["formula"]
    assert [t["coefficient"] for t in c.meta["composition"]["terms"]] == [1.0, -2.0]
    assert c.meta["model"]["id"] == "tiny-llama" and c.layer is None and c.injection == "residual"
    assert all(math.isnan(x) for x in c.head_aie)
    assert torch.allclose(iv_sum(a, b).vector, a.vector + b.vector)
    assert torch.allclose(iv_difference(a, b).vector, a.vector - b.vector)
    assert torch.allclose(iv_scaled(a, 0.5, layer=2).vector, 0.5 * a.vector) and iv_scaled(a, 0.5, layer=2).layer == 2
    assert iv_sum(a, b, name="both").meta["task"] == "both"


def test_composed_iv_round_trips_through_save_and_load(tiny_llama, tmp_path):
    a = tiny_iv(tiny_llama, task="antonym")
    b = tiny_iv(tiny_llama, heads=((1, 1),), task="capitalize")
    c = compose([(1.0, a), (0.5, b)], layer=1, scale=3.0)
    c.save(tmp_path / "c")
    back = InstructionVector.load(tmp_path / "c", tiny_llama)
    assert torch.equal(back.vector, c.vector) and back.heads == c.heads
    assert torch.equal(back.head_means, c.head_means) and back.layer == 1 and back.scale == 3.0
    assert back.meta["composition"] == c.meta["composition"]
    s1 = score_prompts(tiny_llama, zero_shot_prompts(tiny_llama, "antonym", "test", n=5), vector=back)
    s2 = score_prompts(tiny_llama, zero_shot_prompts(tiny_llama, "antonym", "test", n=5), vector=c)
    assert torch.equal(s1.probs, s2.probs)


def test_compose_refuses_other_models_and_bad_terms(tiny_llama, tiny_gemma):
    a = tiny_iv(tiny_llama)
    g = tiny_iv(tiny_gemma, heads=((0, 1),))
    with pytest.raises(IncompatibleVectorError, match="different models"):
        compose([(1.0, a), (1.0, g)])
    other = a.replace(meta={"model": {**a.meta["model"], "id": "another", "config_hash": "x"}})
    with pytest.raises(IncompatibleVectorError, match="different models"):
        iv_sum(a, other)
    with pytest.raises(InputError, match="at least one"):
        compose([])
    with pytest.raises(InputError, match="finite"):
        compose([(float("inf"), a)])
    with pytest.raises(InputError, match="InstructionVector"):
        compose([(1.0, a.vector)])


def test_choose_and_test_picks_on_validation_and_scores_on_test(tiny_llama):
    iv = tiny_iv(tiny_llama)
    v = torch.randn(tiny_llama.geometry.d_model, generator=torch.Generator().manual_seed(5))
    res = choose_and_test(tiny_llama, "antonym", {"iv": iv, "rand": v}, fixed={"iv": (1, 2.0)}, scales=(1.0, 3.0),
                          n_valid=6, n_test=9)
    assert [r["name"] for r in res.rows] == ["no vector", "iv", "rand"]
    r = res.row("rand")
    sw = layer_sweep(tiny_llama, v, zero_shot_prompts(tiny_llama, "antonym", "valid", n=6), scales=(1.0, 3.0),
                     progress=False)
    assert (r["layer"], r["scale"], r["chosen"]) == (sw.best_layer, sw.best_scale, "valid")
    test = zero_shot_prompts(tiny_llama, "antonym", "test", n=9)
    assert r["top1"] == pytest.approx(score_prompts(tiny_llama, test, vector=v, layer=r["layer"],
                                                    scale=r["scale"]).accuracy(1))
    assert res.row("iv")["chosen"] == "given" and res.row("iv")["n"] == 9
    assert "VectorScores" in repr(res) and res.plot().data and len(res.to_pandas()) == 3
    with pytest.raises(InputError, match="fixed names"):
        choose_and_test(tiny_llama, "antonym", {"iv": iv}, fixed={"other": (1, 1.0)})
    with pytest.raises(InputError, match="split"):
        zero_shot_prompts(tiny_llama, "antonym", "dev")


def test_compare_composition(tiny_llama):
    a = tiny_iv(tiny_llama, task="lowercase_first_letter")
    b = tiny_iv(tiny_llama, heads=((1, 2),), task="capitalize")
    own = tiny_iv(tiny_llama, heads=((0, 3), (2, 1)), task="capitalize_first_letter")
    res = compare_composition(tiny_llama, "capitalize_first_letter", iv_sum(a, b), own, parts=[a, b],
                              scales=(1.0, 2.0), n_valid=5, n_test=7)
    names = [r["name"] for r in res.scores.rows]
    assert names == ["no vector", "composed", "own IV", "lowercase_first_letter alone", "capitalize alone"]
    assert res.cosines["composed"] == pytest.approx(1.0) and -1 <= res.cosines["own IV"] <= 1
    assert "cosine_with_composed" in res.to_pandas() and "CompositionResult" in repr(res)


def test_baselines_are_residual_means_and_matched_to_the_iv(tiny_llama):
    base = baseline_vectors(tiny_llama, "antonym", n=4, shots=2)
    split = load_task("antonym").split(0)
    few = encode_prompts(tiny_llama, sample_prompts(split.train, style="few_shot", demo_pool=split.train, shots=2,
                                                    n=4, seed=0, stream=41))
    zero = encode_prompts(tiny_llama, sample_prompts(split.train, style="zero_shot", n=4, seed=0, stream=41))
    assert [p.query for p in few.prompts] == [p.query for p in zero.prompts]

    def mean_at(prompts, layer):  # one prompt at a time: no padding involved
        rows = []
        for ids in prompts.input_ids:
            with record_residual(tiny_llama) as res:
                tiny_llama.forward(tiny_llama.make_batch([ids]))
            rows.append(res[layer][0].float())
        return torch.stack(rows).mean(0)
    assert torch.allclose(base.task_vector[2], mean_at(few, 2), atol=1e-4)
    assert torch.allclose(base.mean_difference[1], mean_at(few, 1) - mean_at(zero, 1), atol=1e-4)
    iv = tiny_iv(tiny_llama)
    at = base.at(iv.layer, norm=iv.norm)
    assert all(v.norm() == pytest.approx(iv.norm, rel=1e-5) for v in at.values())
    res = iv_with_baselines(tiny_llama, "antonym", iv, base, scales=(1.0, 2.0), n_valid=5, n_test=6)
    names = [r["name"] for r in res.rows]
    assert names == ["no vector", "IV", "task vector (matched)", "mean difference (matched)",
                     "task vector (scale chosen)", "mean difference (scale chosen)"]
    assert all(r["layer"] == iv.layer for r in res.rows[1:])
    assert res.row("task vector (matched)")["scale"] == iv.scale
    assert len(base.cosines(iv)) == tiny_llama.geometry.n_layers and base.plot().data and "BaselineVectors" in repr(base)
    with pytest.raises(InputError, match="no injection layer"):
        iv_with_baselines(tiny_llama, "antonym", iv.replace(layer=None), base)
    with pytest.raises(InputError, match="out of range"):
        base.at(99)


def test_baselines_at_best_layer_match_a_brute_force_search(tiny_llama):
    base = baseline_vectors(tiny_llama, "antonym", n=4, shots=2)
    iv = tiny_iv(tiny_llama)
    res = baselines_at_best_layer(tiny_llama, "antonym", iv, base, scales=(1.0, 2.0), n_valid=6, n_test=7)
    valid = zero_shot_prompts(tiny_llama, "antonym", "valid", n=6)
    test = zero_shot_prompts(tiny_llama, "antonym", "test", n=7)
    for name in ("task vector", "mean difference"):
        cells = []
        for layer in range(tiny_llama.geometry.n_layers):
            v = base.at(layer, norm=iv.norm)[name]
            for sc in (1.0, 2.0):
                s = score_prompts(tiny_llama, valid, vector=v, layer=layer, scale=sc)
                cells.append((s.accuracy(1), s.mean_prob, -sc, -layer))
        best = max(cells)
        row = res.row(f"{name} (layer and scale chosen)")
        assert (row["layer"], row["scale"]) == (-best[3], -best[2])
        v = base.at(row["layer"], norm=iv.norm)[name]
        assert row["top1"] == pytest.approx(score_prompts(tiny_llama, test, vector=v, layer=row["layer"],
                                                          scale=row["scale"]).accuracy(1))
        assert row["norm"] == pytest.approx(iv.norm, rel=1e-5)


def test_per_layer_sweep_fast_equals_its_naive_fallback(tiny_gemma, monkeypatch):
    from ivkit.analysis import anatomy_baselines as ab
    from ivkit.engine import continuation

    prompts = zero_shot_prompts(tiny_gemma, "antonym", "valid", n=6)
    vectors = torch.randn(tiny_gemma.geometry.n_layers, tiny_gemma.geometry.d_model,
                          generator=torch.Generator().manual_seed(6))
    fast = ab.per_layer_sweep(tiny_gemma, vectors, prompts, layers=[0, 2, 3], scales=(1.0, 4.0))
    monkeypatch.setattr(continuation, "fast_unavailable", lambda model: "forced")
    naive = ab.per_layer_sweep(tiny_gemma, vectors, prompts, layers=[0, 2, 3], scales=(1.0, 4.0))
    assert torch.equal(fast[0], naive[0]) and torch.allclose(fast[1], naive[1], atol=1e-4)
