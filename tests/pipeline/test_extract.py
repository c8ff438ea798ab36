import pytest
import torch

import ivkit
from ivkit import InstructionVector, extract, load_task
from ivkit.core.errors import TaskError
from ivkit.pipeline import greedy_heads


def test_extract_pipeline_on_a_tiny_model(tmp_path, tiny_llama, task_file):
    res = extract(tiny_llama, str(task_file), shots=3, mean_prompts=6, trials=2, top_k=3, seed=1,
                  filter_correct=False, progress=False)
    g = tiny_llama.geometry
    assert res.effects.aie.shape == (g.n_layers, g.n_heads) and res.effects.per_trial.shape[0] == 2
    assert res.iv.k == 3 and res.iv.heads == [(l, h) for l, h, _ in res.effects.top_heads(3)]
    assert res.sweep is not None and res.iv.layer == res.sweep.best_layer
    assert res.iv.meta["layer_selection"]["split"] == "valid"
    assert set(res.timings) == {"filter", "mean_activations", "indirect_effects", "build", "layer_sweep"}
    res.save(tmp_path / "out")
    for f in ("iv.safetensors", "iv.json", "indirect_effects.json", "heads.html", "layer_sweep.json"):
        assert (tmp_path / "out" / f).exists(), f
    back = InstructionVector.load(tmp_path / "out", model=tiny_llama)
    assert torch.equal(back.vector, res.iv.vector) and back.layer == res.iv.layer


def test_extract_is_reproducible(tiny_llama, task_file):
    kw = dict(shots=3, mean_prompts=4, trials=2, top_k=2, seed=3, filter_correct=False, progress=False, sweep=False)
    a, b = extract(tiny_llama, str(task_file), **kw), extract(tiny_llama, str(task_file), **kw)
    assert torch.equal(a.effects.aie, b.effects.aie) and torch.equal(a.iv.vector, b.iv.vector)
    c = extract(tiny_llama, str(task_file), **{**kw, "seed": 4})
    assert not torch.equal(a.effects.aie, c.effects.aie)


def test_extract_pieces_compose_like_the_pipeline(tiny_llama, task_file):
    """The stages called by hand, with the same prompts, give the pipeline's numbers."""
    res = extract(tiny_llama, str(task_file), shots=3, mean_prompts=4, trials=2, top_k=2, seed=0,
                  filter_correct=False, progress=False, sweep=False)
    means = res.iv.mean_activations
    iv = InstructionVector.build(tiny_llama, means, res.effects, k=2)
    assert torch.allclose(iv.vector, res.iv.vector)


def test_task_the_model_cannot_do_is_a_clear_error(tiny_llama, task_file):
    with pytest.raises(TaskError, match="answers none of the .* clean 3-shot prompts"):
        extract(tiny_llama, str(task_file), shots=3, mean_prompts=4, trials=2, progress=False)


def test_instruction_style_extraction(tiny_llama, task_file):
    with pytest.raises(TaskError, match="needs an instruction"):
        extract(tiny_llama, str(task_file), style="instruction", progress=False)
    task = load_task(task_file, instruction="Give the opposite of the word.")
    res = extract(tiny_llama, task, style="instruction", shots=3, mean_prompts=4, trials=2, top_k=2,
                  filter_correct=False, progress=False, sweep=False)
    assert res.iv.meta["style"] == "instruction" and res.effects.per_trial.shape[0] == 2


def test_nll_metric_through_the_pipeline(tiny_llama, task_file):
    res = extract(tiny_llama, str(task_file), shots=3, mean_prompts=4, trials=2, top_k=2, metric="nll",
                  filter_correct=False, progress=False, sweep=False)
    assert res.effects.metric == "nll" and res.iv.meta["metric"] == "nll"
    assert (res.effects.baseline < 0).all()  # log-likelihoods


def test_top_k_candidates_are_chosen_on_the_validation_split(tiny_llama, task_file):
    kw = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False, seed=2)
    res = extract(tiny_llama, str(task_file), top_k=(2, 5), **kw)
    sel = res.iv.meta["k_selection"]
    assert sel["candidates"] == [2, 5] and res.iv.k in (2, 5)
    assert sel["valid_top1"][[2, 5].index(res.iv.k)] == max(sel["valid_top1"]) == res.sweep.best_top1
    single = extract(tiny_llama, str(task_file), top_k=res.iv.k, **kw)
    assert torch.equal(single.iv.vector, res.iv.vector) and single.iv.layer == res.iv.layer
    with pytest.raises(ValueError, match="need the validation sweep"):
        extract(tiny_llama, str(task_file), top_k=(2, 5), sweep=False, **kw)


@pytest.mark.parametrize("bad, match", [
    (dict(top_k=0), "top_k must be in 1..12"),
    (dict(top_k=13), "top_k must be in 1..12"),
    (dict(top_k=(3, 5), sweep=False), "several top_k candidates"),
    (dict(metric="acc"), "unknown metric 'acc'"),
    (dict(method="fastest"), "unknown method 'fastest'"),
    (dict(style="zero_shot"), "style must be one of few_shot, instruction"),
    (dict(post_norm="folded"), "post_norm must be one of"),
    (dict(scales=()), "at least one finite scale"),
    (dict(trials=0), "trials must be at least 1"),
    (dict(mean_prompts=0), "mean_prompts must be at least 1"),
    (dict(shots=0), "shots must be at least 1"),
    (dict(injection="everywhere"), "injection must be one of residual, heads, auto"),
    (dict(injection="auto", sweep=False), "needs the validation sweep"),
    (dict(ranking="random"), "ranking must be one of shuffled, zero_shot, both"),
    (dict(ranking="both", sweep=False), "needs the validation sweep to choose between the rankings"),
    (dict(ranking="zero_shot", zero_shot_trials=0), "zero_shot_trials must be at least 1"),
    (dict(selection="best"), "selection must be one of top_k, greedy"),
    (dict(selection="greedy", top_k=5), "top_k does not go with selection greedy"),
    (dict(selection="greedy", sweep=False), "needs the validation sweep to choose the path's length"),
    (dict(selection="greedy", greedy_pool=0), "greedy_pool must be at least 1"),
    (dict(selection="greedy", greedy_max_heads=0), "greedy_max_heads must be at least 1"),
    (dict(selection="greedy", greedy_queries=0), "greedy_queries must be at least 1"),
    (dict(selection="greedy", greedy_scale=float("nan")), "greedy_scale must be finite"),
])
def test_bad_options_fail_before_any_forward_pass(tiny_llama, task_file, monkeypatch, bad, match):
    from ivkit.core.errors import InputError

    def no_pass(*a, **k):
        raise AssertionError("a forward pass ran before the options were checked")

    monkeypatch.setattr(tiny_llama.backend, "forward", no_pass)
    monkeypatch.setattr(tiny_llama.model, "forward", no_pass)
    kw = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False)
    with pytest.raises(InputError, match=match):
        extract(tiny_llama, str(task_file), **{**kw, **bad})


def test_injection_is_chosen_on_the_validation_split(tiny_llama, task_file):
    kw = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False, seed=2, top_k=3,
              scales=(1.0, 4.0))
    auto = extract(tiny_llama, str(task_file), injection="auto", **kw)
    sw = auto.sweep
    assert sw.heads_top1 is not None and len(sw.layers) == tiny_llama.geometry.n_layers
    assert auto.iv.injection == sw.best_injection and auto.iv.scale == sw.best_scale
    assert auto.iv.layer == sw.best_layer and auto.iv.meta["layer_selection"]["injection"] == auto.iv.injection
    heads = extract(tiny_llama, str(task_file), injection="heads", **kw)
    assert heads.iv.injection == "heads" and heads.iv.layer is None and heads.sweep.layers == []
    assert heads.sweep.heads_top1 == sw.heads_top1
    resid = extract(tiny_llama, str(task_file), **kw)
    assert resid.iv.injection == "residual" and resid.sweep.heads_top1 is None
    assert resid.sweep.top1 == sw.top1  # the residual cells are the same
    fixed = extract(tiny_llama, str(task_file), injection="heads", sweep=False, **kw)
    assert fixed.iv.injection == "heads" and fixed.iv.layer is None


def test_zero_shot_ranking_is_the_per_head_loop_on_zero_shot_training_prompts(tiny_llama, task_file):
    """``ranking="zero_shot"``: the heads are the top k of the naive per-head loop run on
    zero-shot prompts of training queries, built here independently of the pipeline."""
    from ivkit import indirect_effects
    from ivkit.core.prompts import encode_prompts, sample_prompts

    res = extract(tiny_llama, str(task_file), shots=3, mean_prompts=4, trials=2, top_k=3, seed=1, sweep=False,
                  ranking="zero_shot", zero_shot_trials=5, filter_correct=False, progress=False)
    split = load_task(task_file).split(1)
    zs = sample_prompts(split.train, style="zero_shot", n=5, seed=1, stream=11)
    assert all(not p.demos for p in zs) and all(p.query in split.train for p in zs)
    naive = indirect_effects(tiny_llama, encode_prompts(tiny_llama, zs), res.iv.mean_activations, method="naive",
                             progress=False)
    assert res.effects.info["ranking"] == "zero_shot" and res.effects.per_trial.shape[0] == 5
    assert torch.allclose(res.effects.aie, naive.aie, atol=1e-5)
    assert res.iv.heads == [(l, h) for l, h, _ in naive.top_heads(3)] and res.iv.meta["ranking"] == "zero_shot"
    shuffled = extract(tiny_llama, str(task_file), shots=3, mean_prompts=4, trials=2, top_k=3, seed=1, sweep=False,
                       filter_correct=False, progress=False)
    assert torch.equal(shuffled.iv.mean_activations, res.iv.mean_activations)  # same means, other ranking
    assert not torch.allclose(shuffled.effects.aie, res.effects.aie)


def test_both_rankings_are_chosen_on_the_validation_split(tmp_path, tiny_llama, task_file):
    kw = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False, seed=2, top_k=(2, 4),
              zero_shot_trials=5, scales=(1.0, 4.0))
    both = extract(tiny_llama, str(task_file), ranking="both", **kw)
    sel, r = both.iv.meta["ranking_selection"], both.iv.meta["ranking"]
    assert sel["candidates"] == ["shuffled", "zero_shot"] and both.effects.info["ranking"] == r
    assert sel["valid_top1"][sel["candidates"].index(r)] == max(sel["valid_top1"]) == both.sweep.best_top1
    other = {"shuffled": "zero_shot", "zero_shot": "shuffled"}[r]
    assert set(both.other_effects) == {other}
    singles = {x: extract(tiny_llama, str(task_file), ranking=x, **kw) for x in ("shuffled", "zero_shot")}
    assert [singles[x].sweep.best_top1 for x in sel["candidates"]] == sel["valid_top1"]
    assert torch.equal(singles[r].iv.vector, both.iv.vector) and singles[r].iv.layer == both.iv.layer
    assert torch.equal(singles[other].effects.aie, both.other_effects[other].aie)
    both.save(tmp_path / "out")
    assert (tmp_path / "out" / f"indirect_effects_{other}.json").exists()
    assert InstructionVector.load(tmp_path / "out").meta["ranking"] == r


def _hand_greedy(model, enc, means, pool, scale, max_heads):
    """Independent oracle for `greedy_heads`: plain forward pre-hooks on the output
    projections, one prompt at a time, no ivkit scoring or injection code."""
    g = model.geometry

    def score(heads):
        def hook_for(layer):
            def pre(module, args):
                x = args[0].clone()
                for l, h in heads:
                    if l == layer:
                        x[0, -1, h * g.d_head:(h + 1) * g.d_head] = scale * means[l, h]
                return (x,)
            return pre

        handles = [model.attn_out_proj(l).register_forward_pre_hook(hook_for(l)) for l in {l for l, _ in heads}]
        right, probs = 0, 0.0
        try:
            with torch.no_grad():
                for ids, target in zip(enc.input_ids, enc.first_token.tolist()):
                    p = torch.softmax(model.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
                    right += int(p.argmax().item() == target)
                    probs += p[target].item()
        finally:
            for h in handles:
                h.remove()
        return right / len(enc), probs / len(enc)

    chosen, scores, best = [], [], (-1.0, -1.0)
    while len(chosen) < max_heads:
        step = max(((score(chosen + [hd]), -i, hd) for i, hd in enumerate(pool) if hd not in chosen))
        if step[0] <= best:
            break
        best = step[0]
        chosen.append(step[2])
        scores.append(step[0])
    return chosen, scores


# (7, 1.0) runs to the cap of 3 heads; (4, 2.5) stops after one, when no second head improves.
@pytest.mark.parametrize("seed, scale, stops_early", [(7, 1.0, False), (4, 2.5, True)])
def test_greedy_heads_equals_a_hand_written_greedy_search(tiny_llama, seed, scale, stops_early):
    from ivkit.activations import head_activations

    from ..conftest import prompts_of_mixed_lengths

    enc = prompts_of_mixed_lengths(tiny_llama, n=6, style="zero_shot", seed=seed)
    means = head_activations(tiny_llama, prompts_of_mixed_lengths(tiny_llama, n=4, seed=5)).mean(0)
    pool = [(0, 1), (1, 2), (2, 3), (2, 0), (1, 0)]
    path = greedy_heads(tiny_llama, means, enc, pool + [(0, 1)], scale=scale, max_heads=3, batch_size=4,
                        progress=False)
    heads, scores = _hand_greedy(tiny_llama, enc, means, pool, scale, 3)
    assert path.pool == pool  # duplicates dropped, order kept
    assert path.heads == heads and 1 <= len(heads) <= 3
    assert [round(a, 6) for a in path.top1] == [round(a, 6) for a, _ in scores]
    assert torch.allclose(torch.tensor(path.prob), torch.tensor([p for _, p in scores]), atol=1e-5)
    keys = list(zip(path.top1, path.prob))
    assert all(b > a for a, b in zip(keys, keys[1:]))  # each added head improved the score
    assert (len(heads) < 3) == stops_early
    df = path.to_pandas()
    assert list(df["layer"]) == [l for l, _ in heads] and list(df["step"]) == list(range(1, len(heads) + 1))


def test_greedy_selection_builds_one_candidate_per_prefix(tmp_path, tiny_llama, task_file):
    from ivkit.core.prompts import encode_prompts, sample_prompts

    kw = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False, seed=2, scales=(1.0, 3.0),
              zero_shot_trials=5)
    res = extract(tiny_llama, str(task_file), ranking="both", selection="greedy", greedy_pool=3, greedy_max_heads=3,
                  greedy_queries=8, injection="auto", **kw)
    sel = res.iv.meta["head_selection"]
    # the pool: the top 3 of each ranking, shuffled first, without repeats
    zero = res.other_effects["zero_shot"]
    pool = list(dict.fromkeys([(l, h) for l, h, _ in res.effects.top_heads(3)] + [(l, h) for l, h, _ in zero.top_heads(3)]))
    assert [tuple(x) for x in sel["pool"]] == pool and sel["method"] == "greedy" and sel["scale"] == 3.0
    # the same path from the public function, on the same selection queries
    split = load_task(task_file).split(2)
    enc = encode_prompts(tiny_llama, sample_prompts(split.train, style="zero_shot", n=8, seed=2, stream=13))
    path = greedy_heads(tiny_llama, res.iv.mean_activations, enc, pool, scale=3.0, max_heads=3, progress=False)
    assert [tuple(x) for x in sel["heads"]] == path.heads
    # the IV is a prefix, chosen on validation among all prefixes
    n = res.iv.k
    assert res.iv.heads == path.heads[:n] and res.iv.meta["k_selection"]["candidates"] == list(range(1, len(path.heads) + 1))
    assert res.iv.meta["k_selection"]["valid_top1"][n - 1] == max(res.iv.meta["k_selection"]["valid_top1"])
    assert res.iv.meta["ranking"] == "both" and "greedy" in res.timings
    res.save(tmp_path / "out")
    back = InstructionVector.load(tmp_path / "out", model=tiny_llama)
    assert back.heads == res.iv.heads and back.meta["head_selection"]["heads"] == sel["heads"]
    assert torch.equal(back.vector, res.iv.vector)


def test_the_auto_recipe_tries_every_candidate_and_records_its_choice(tiny_llama, task_file):
    kw = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False, seed=2, scales=(1.0, 3.0),
              zero_shot_trials=4, greedy_pool=2, greedy_max_heads=2, greedy_queries=6)
    res = extract(tiny_llama, str(task_file), recipe="auto", **kw)
    rec = res.iv.meta["recipe"]
    kinds = {(c["selection"], c["ranking"]) for c in rec["candidates"]}
    assert {("top_k", "shuffled"), ("top_k", "zero_shot"), ("greedy", "both")} <= kinds
    assert sum(c["selection"] == "top_k" for c in rec["candidates"]) == 6  # 2 rankings x k in 3, 5, 10 (12 heads)
    best = max(c["valid_top1"] for c in rec["candidates"])
    assert res.sweep.best_top1 == best and rec["chosen"]["k"] == res.iv.k
    assert res.sweep.heads_top1 is not None  # residual and heads injection both tried
    with pytest.raises(ivkit.InputError, match="recipe auto chooses"):
        extract(tiny_llama, str(task_file), recipe="auto", ranking="zero_shot", **kw)
