import dataclasses

import pytest
import torch

from ivkit import InstructionVector, evaluate_iv, layer_sweep, mean_head_activations, score_prompts
from ivkit.core.errors import InputError
from ivkit.evaluation import CONDITIONS, LayerSweep

from ..conftest import prompts_of_mixed_lengths


@pytest.fixture(scope="module")
def iv(tiny_llama):
    means = mean_head_activations(tiny_llama, prompts_of_mixed_lengths(tiny_llama, n=4))
    g = tiny_llama.geometry
    aie = torch.rand(g.n_layers, g.n_heads, generator=torch.Generator().manual_seed(0))
    return InstructionVector.build(tiny_llama, means, aie, k=4, layer=1, task="antonym")


@torch.no_grad()
def test_scores_match_a_manual_ranking(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=5, style="zero_shot")
    s = score_prompts(tiny_model, enc, batch_size=2)
    for i, ids in enumerate(enc.input_ids):
        logits = tiny_model.model(input_ids=torch.tensor([ids])).logits[0, -1]
        order = torch.argsort(logits, descending=True).tolist()
        assert s.ranks[i].item() == order.index(int(enc.first_token[i]))
        assert s.probs[i].item() == pytest.approx(torch.softmax(logits, -1)[enc.first_token[i]].item(), abs=1e-6)
    assert s.accuracy(1) == pytest.approx((s.ranks == 0).float().mean().item())
    assert s.accuracy(len(tiny_model.tokenizer)) == 1.0


def test_layer_sweep_tries_every_layer_and_picks_the_best(tiny_llama, iv):
    enc = prompts_of_mixed_lengths(tiny_llama, n=6, style="zero_shot")
    sw = layer_sweep(tiny_llama, iv, enc, scales=(1.0, 3.0))
    assert sw.layers == list(range(tiny_llama.geometry.n_layers)) and sw.scales == [1.0, 3.0] and sw.n == 6
    assert sw.method == "fast"
    cells = [(sw.top1[si][li], sw.mean_prob[si][li], -sw.scales[si], -sw.layers[li], sw.layers[li], sw.scales[si])
             for si in range(2) for li in range(len(sw.layers))]
    best = max(cells)
    assert (sw.best_layer, sw.best_scale) == (best[4], best[5])
    # The sweep's numbers are those of score_prompts with the vector at that layer and scale.
    s = score_prompts(tiny_llama, enc, vector=iv.vector, layer=2, scale=3.0)
    assert sw.mean_prob[1][2] == pytest.approx(s.mean_prob, abs=1e-6)
    assert sw.top1[1][2] == pytest.approx(s.accuracy(1))
    assert sw.baseline_prob == pytest.approx(score_prompts(tiny_llama, enc).mean_prob, abs=1e-6)
    assert len(sw.to_pandas()) == 2 * len(sw.layers) and sw.plot().data


def test_fast_sweep_equals_naive_sweep(tiny_model):
    enc = prompts_of_mixed_lengths(tiny_model, n=7, style="zero_shot")
    v = torch.randn(tiny_model.geometry.d_model, generator=torch.Generator().manual_seed(3))
    a = layer_sweep(tiny_model, v, enc, scales=(0.5, 2.0), method="naive", progress=False)
    b = layer_sweep(tiny_model, v, enc, scales=(0.5, 2.0), method="fast", progress=False, max_memory_mb=0.01)
    assert b.method == "fast" and a.method == "naive"
    assert a.top1 == b.top1
    assert torch.allclose(torch.tensor(a.mean_prob), torch.tensor(b.mean_prob), atol=1e-6)
    assert (a.best_layer, a.best_scale) == (b.best_layer, b.best_scale)


def test_best_cell_tie_break():
    sw = LayerSweep([0, 1, 2], [1.0, 2.0], [[0.5, 0.5, 0.4], [0.5, 0.3, 0.2]],
                    [[0.2, 0.3, 0.9], [0.3, 0.1, 0.1]], 0.0, 0.0, 10)
    assert (sw.best_layer, sw.best_scale) == (1, 1.0)
    sw2 = LayerSweep([0, 1], [1.0, 2.0], [[0.5, 0.5], [0.5, 0.5]], [[0.2, 0.2], [0.2, 0.2]], 0.0, 0.0, 10)
    assert (sw2.best_layer, sw2.best_scale) == (0, 1.0)


def test_evaluation_has_all_conditions_and_is_reproducible(tiny_llama, iv):
    kw = dict(n_prompts=8, shots=3, seed=5, progress=False)
    a = evaluate_iv(tiny_llama, "antonym", iv, **kw)
    b = evaluate_iv(tiny_llama, "antonym", iv, **kw)
    c = evaluate_iv(tiny_llama, "antonym", iv, **{**kw, "seed": 6})
    assert set(a.results) == set(CONDITIONS) and 4 <= a.n <= 8 and a.layer == 1  # unusable answers are dropped
    assert a.results == b.results
    assert a.results != c.results
    d = a.to_dict()
    for key in (*CONDITIONS, "layer", "n"):
        assert key in d
    assert list(a.to_pandas()["condition"]) == list(CONDITIONS)
    # The IV conditions really differ from their plain counterparts (the hook is live).
    assert a.results["zero_shot_iv"]["mean_prob"] != a.results["zero_shot"]["mean_prob"]
    assert a.results["shuffled_iv"]["mean_prob"] != a.results["shuffled"]["mean_prob"]
    assert a.results["random_control"]["mean_prob"] != a.results["zero_shot_iv"]["mean_prob"]
    e = evaluate_iv(tiny_llama, "antonym", iv, layer=0, **kw)
    assert e.layer == 0 and e.results["zero_shot"] == a.results["zero_shot"]


def test_scoring_can_record_the_same_head_outputs_as_head_activations(tiny_model):
    """The extraction filter reuses its scoring passes for the mean activations."""
    from ivkit.activations import head_activations

    enc = prompts_of_mixed_lengths(tiny_model, n=5)
    s = score_prompts(tiny_model, enc, batch_size=2, record_heads=True)
    assert (s.heads - head_activations(tiny_model, enc, batch_size=3)).abs().max() <= 1e-5
    assert score_prompts(tiny_model, enc).heads is None


def test_top1_metrics_on_a_subset_of_queries():
    from ivkit.evaluation.conditions import _top1_metrics

    ranks = torch.tensor([0, 2, 0, 1])
    m = _top1_metrics(ranks[torch.tensor([True, True, False, False])])
    assert m["top1"] == 0.5 and m["top1_lo"] < 0.5 < m["top1_hi"]
    m = _top1_metrics(ranks[torch.tensor([True, False, True, False])], "sub")
    assert m["sub"] == 1.0 and m["sub_hi"] == 1.0 and 0 < m["sub_lo"] < 1
    assert _top1_metrics(ranks[:0]) == {"top1": None, "top1_lo": None, "top1_hi": None}


def test_wilson_interval_matches_hand_computed_values():
    """Against the closed form worked by hand (z = 1.959964): 8 of 10 gives (0.4902, 0.9433);
    0 of 10 gives (0, 0.2775); and a 99% interval is wider than the 95% one."""
    from ivkit.core.stats import wilson_interval

    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94331), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] == pytest.approx(1 - 0.27753, abs=1e-4)
    lo99, hi99 = wilson_interval(73, 98, confidence=0.99)
    lo95, hi95 = wilson_interval(73, 98)
    assert lo99 < lo95 < 73 / 98 < hi95 < hi99
    assert wilson_interval(0, 0) is None
    with pytest.raises(InputError, match="successes <= n"):
        wilson_interval(5, 3)
    with pytest.raises(InputError, match="confidence"):
        wilson_interval(1, 3, confidence=1.5)


def test_evaluation_reports_accuracy_on_the_queries_few_shot_gets_right(tiny_llama, iv):
    """The reference protocol: every condition's top-1 on the queries clean few-shot answers right,
    recomputed here from independent scoring passes."""
    import json

    from ivkit.evaluation import evaluation_prompts

    kw = dict(n_prompts=8, shots=3, seed=5)
    ev = evaluate_iv(tiny_llama, "antonym", iv, progress=False, **kw)
    sets = evaluation_prompts(tiny_llama, "antonym", **kw)
    fs = score_prompts(tiny_llama, sets["few_shot"])
    right = fs.ranks == 0
    assert ev.n_icl_correct == int(right.sum())
    zs_iv = score_prompts(tiny_llama, sets["zero_shot"], vector=iv.vector, layer=iv.layer, scale=iv.scale)
    want = float((zs_iv.ranks[right] == 0).float().mean()) if right.any() else None
    got = ev.to_dict()["icl_correct"]["zero_shot_iv"]
    assert (got is None and want is None) or got == pytest.approx(want)
    if right.any():
        assert ev.results["few_shot"]["top1_icl_correct"] == 1.0
    # Every top-1 carries its Wilson interval, for all queries and for the ICL-right ones.
    from ivkit.core.stats import wilson_interval

    d = ev.to_dict()
    assert d["ci95"]["zero_shot_iv"] == pytest.approx(list(wilson_interval(int((zs_iv.ranks == 0).sum()), ev.n)))
    if right.any():
        k = int((zs_iv.ranks[right] == 0).sum())
        assert d["icl_correct_ci95"]["zero_shot_iv"] == pytest.approx(list(wilson_interval(k, int(right.sum()))))
    else:
        assert d["icl_correct_ci95"]["zero_shot_iv"] is None
    json.loads(json.dumps(ev.to_dict(), allow_nan=False))  # strict JSON, no NaN
    bars = ev.plot().data[0]  # top-1 bars with the interval as error bars
    i = list(bars.x).index("zero_shot_iv")
    assert bars.y[i] - bars.error_y.arrayminus[i] == pytest.approx(d["ci95"]["zero_shot_iv"][0])
    assert bars.y[i] + bars.error_y.array[i] == pytest.approx(d["ci95"]["zero_shot_iv"][1])
    partial = evaluate_iv(tiny_llama, "antonym", iv, progress=False, conditions=("zero_shot",), **kw)
    assert partial.n_icl_correct is None and partial.to_dict()["icl_correct"]["zero_shot"] is None


def test_evaluation_defaults_to_the_ivs_own_seed_shots_and_template(tiny_llama, iv, caplog):
    """Evaluating with another seed than the extraction's could put its training or validation
    queries in the test split: the IV's own protocol is the default, and a different seed warns."""
    import logging

    from ivkit import PromptTemplate

    tpl = PromptTemplate(query="Input: {input}\nOutput:", name="io")
    own = iv.replace(meta={"seed": 6, "shots": 2, "template": tpl.to_dict()})
    kw = dict(n_prompts=8, progress=False)
    implicit = evaluate_iv(tiny_llama, "antonym", own, **kw)
    explicit = evaluate_iv(tiny_llama, "antonym", own, seed=6, shots=2, template=tpl, **kw)
    assert implicit.results == explicit.results
    assert implicit.info["seed"] == 6 and implicit.info["shots"] == 2
    from ivkit.core.prompts import DEFAULT_TEMPLATE

    other = evaluate_iv(tiny_llama, "antonym", own, template=DEFAULT_TEMPLATE, **kw)
    assert implicit.results != other.results  # the IV's template was used
    with caplog.at_level(logging.WARNING, logger="ivkit.evaluate"):
        evaluate_iv(tiny_llama, "antonym", own, seed=0, conditions=("zero_shot",), **kw)
    assert "extracted with seed 6" in caplog.text


def test_scoring_with_an_iv_uses_its_layer_and_scale(tiny_llama, iv):

    enc = prompts_of_mixed_lengths(tiny_llama, n=4, style="zero_shot")
    scaled = iv.replace(layer=2, scale=3.0)
    a = score_prompts(tiny_llama, enc, vector=scaled)
    b = score_prompts(tiny_llama, enc, vector=iv.vector, layer=2, scale=3.0)
    assert torch.equal(a.probs, b.probs)
    assert not torch.equal(a.probs, score_prompts(tiny_llama, enc, vector=iv.vector, layer=2).probs)  # scale 1


def test_sweep_with_the_heads_injection(tiny_llama, iv):
    enc = prompts_of_mixed_lengths(tiny_llama, n=6, style="zero_shot")
    sw = layer_sweep(tiny_llama, iv, enc, scales=(1.0, 3.0), injections=("residual", "heads"), progress=False)
    for si, sc in enumerate((1.0, 3.0)):
        s = score_prompts(tiny_llama, enc, vector=iv, scale=sc, injection="heads")
        assert sw.heads_top1[si] == pytest.approx(s.accuracy(1)) and sw.heads_prob[si] == pytest.approx(s.mean_prob)
    assert len(sw.cells()) == 2 * len(sw.layers) + 2 and len(sw.to_pandas()) == len(sw.cells())
    best = max(sw.cells(), key=lambda c: (c["top1"], c["mean_prob"]))
    assert (sw.best_top1, sw.best_prob) == (best["top1"], best["mean_prob"])
    assert (sw.best_layer is None) == (sw.best_injection == "heads")
    only = layer_sweep(tiny_llama, iv, enc, scales=(1.0, 3.0), injections=("heads",), progress=False)
    assert only.layers == [] and only.heads_top1 == sw.heads_top1 and only.best_injection == "heads"
    for s in (sw, only):  # the plot shows the heads cells and marks the chosen one
        fig = s.plot()
        names = [t.name for t in fig.data]
        assert "heads injection" in names and list(fig.data[names.index("heads injection")].y) == s.heads_top1
        assert list(fig.data[names.index("chosen")].y) == [s.best_top1]
    with pytest.raises(ValueError, match="needs an InstructionVector"):
        layer_sweep(tiny_llama, iv.vector, enc, injections=("heads",))
    with pytest.raises(ValueError, match="injections must be"):
        layer_sweep(tiny_llama, iv, enc, injections=("sideways",))


def test_heads_wins_a_tie_only_on_probability():
    sw = LayerSweep([0, 1], [1.0, 2.0], [[0.5, 0.6], [0.5, 0.5]], [[0.2, 0.3], [0.2, 0.2]], 0.0, 0.0, 10,
                    heads_top1=[0.6, 0.4], heads_prob=[0.3, 0.9])
    assert (sw.best_injection, sw.best_layer, sw.best_scale) == ("residual", 1, 1.0)  # exact tie: residual
    sw = dataclasses.replace(sw, heads_prob=[0.31, 0.9])
    assert (sw.best_injection, sw.best_layer, sw.best_scale) == ("heads", None, 1.0)
    assert sw.to_dict()["best_injection"] == "heads"


def test_evaluation_with_the_heads_injection(tiny_llama, iv):
    heads_iv = InstructionVector.build(tiny_llama, iv.mean_activations, heads=iv.heads, injection="heads", scale=2.0)
    ev = evaluate_iv(tiny_llama, "antonym", heads_iv, n_prompts=8, shots=3, seed=5, progress=False)
    assert ev.layer is None and ev.info["injection"] == "heads" and ev.to_dict()["layer"] is None
    from ivkit.evaluation import evaluation_prompts

    zs = evaluation_prompts(tiny_llama, "antonym", n_prompts=8, shots=3, seed=5)["zero_shot"]
    assert ev.results["zero_shot_iv"]["mean_prob"] == pytest.approx(
        score_prompts(tiny_llama, zs, vector=heads_iv).mean_prob, abs=1e-6)
    ctrl = score_prompts(tiny_llama, zs, vector=heads_iv.with_random_directions(5))
    assert ev.results["random_control"]["mean_prob"] == pytest.approx(ctrl.mean_prob, abs=1e-6)
    # residual injection at a given layer, from the same IV
    ev2 = evaluate_iv(tiny_llama, "antonym", heads_iv, layer=1, n_prompts=8, shots=3, seed=5, progress=False)
    assert ev2.layer == 1 and ev2.info["injection"] == "residual"
    with pytest.raises(ValueError, match="leave layer out"):
        evaluate_iv(tiny_llama, "antonym", heads_iv, layer=1, injection="heads", n_prompts=8, progress=False)
    with pytest.raises(ValueError, match="leave layer out"):
        score_prompts(tiny_llama, zs, vector=heads_iv, layer=1, injection="heads")


def test_loose_hits_accept_the_answer_in_another_case(tiny_llama):
    from ivkit.core.prompts import encode_prompts, make_prompt
    from ivkit.core.tasks import Example
    from ivkit.evaluation import Scores

    tok = tiny_llama.tokenizer
    prompts = encode_prompts(tiny_llama, [make_prompt(Example(x, y), style="zero_shot")
                                          for x, y in (("hot", "cold"), ("big", "small"), ("up", "down"))])
    first = prompts.first_token.tolist()
    other_case = tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(first[0]).replace("c", "C", 1))
    assert tok.decode([other_case]).strip() == "C" + tok.decode([first[0]]).strip()[1:], "the fixture needs ĠCold-like"
    s = Scores(torch.tensor([1, 0, 5]), torch.zeros(3), None, torch.tensor([other_case, first[1], first[0]]))
    assert s.loose_hits(tok, prompts).tolist() == [True, True, False]
    assert s.accuracy(1) == pytest.approx(1 / 3)


def test_every_condition_reports_loose_accuracy_at_least_top1(tiny_llama, iv):
    ev = evaluate_iv(tiny_llama, "antonym", iv, n_prompts=8, shots=3, seed=5, progress=False)
    for c, r in ev.results.items():
        assert r["top1_loose"] >= r["top1"] and r["top1_loose_lo"] <= r["top1_loose"] <= r["top1_loose_hi"], c
    assert set(ev.to_dict()["loose"]) == set(ev.results)
