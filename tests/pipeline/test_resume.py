"""An interrupted extraction resumes from its run directory and gives the uninterrupted result; a
changed setting recomputes the stages that read it, and only those."""

import pytest
import torch

import ivkit.pipeline.stages as stages
from ivkit import extract

KW = dict(shots=3, mean_prompts=4, trials=2, filter_correct=False, progress=False, seed=2, scales=(1.0, 3.0))


def _same(a, b):
    assert a.iv.heads == b.iv.heads and (a.iv.layer, a.iv.scale, a.iv.injection) == (b.iv.layer, b.iv.scale,
                                                                                       b.iv.injection)
    assert torch.equal(a.iv.vector, b.iv.vector) and torch.equal(a.effects.per_trial, b.effects.per_trial)
    assert a.sweep.to_dict() | {"seconds": 0} == b.sweep.to_dict() | {"seconds": 0}
    assert _untimed(a.iv.meta) == _untimed(b.iv.meta)


def _untimed(meta):
    """``meta`` without wall times, which differ between any two runs."""
    out = {k: v for k, v in meta.items() if k != "timings"}
    if "head_selection" in out:
        out["head_selection"] = {k: v for k, v in out["head_selection"].items() if k != "seconds"}
    return out


def test_a_run_interrupted_in_the_sweep_resumes_to_the_same_result(tmp_path, tiny_llama, task_file, monkeypatch):
    whole = extract(tiny_llama, str(task_file), top_k=(2, 3, 4), **KW)
    real, calls = stages.layer_sweep, []

    def interrupted_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(stages, "layer_sweep", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_llama, str(task_file), top_k=(2, 3, 4), out=tmp_path, **KW)
    assert not (tmp_path / "iv.json").exists() and (tmp_path / ".stages" / "sweep.partial.json").exists()
    calls.clear()
    monkeypatch.setattr(stages, "layer_sweep", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = extract(tiny_llama, str(task_file), top_k=(2, 3, 4), out=tmp_path, **KW)
    assert len(calls) == 1  # only the third candidate's sweep ran
    assert set(again.resumed) == {"prompts", "effects_shuffled"}
    _same(again, whole)
    assert (tmp_path / "iv.json").exists() and (tmp_path / "heads.html").exists()
    calls.clear()
    done = extract(tiny_llama, str(task_file), top_k=(2, 3, 4), out=tmp_path, **KW)  # everything stored
    assert calls == [] and set(done.resumed) == {"prompts", "effects_shuffled", "sweep"}
    _same(done, whole)


def test_a_greedy_search_interrupted_after_one_head_resumes_where_it_stopped(tmp_path, tiny_llama, task_file,
                                                                              monkeypatch):
    kw = dict(KW, selection="greedy", greedy_pool=4, greedy_max_heads=3, greedy_queries=8)
    whole = extract(tiny_llama, str(task_file), **kw)
    assert len(whole.iv.meta["head_selection"]["heads"]) >= 2, "the path should be long enough to interrupt"
    real = stages.greedy_heads

    def stop_after_one_head(*args, on_step=None, **kwargs):
        def step(path):
            on_step(path)
            raise KeyboardInterrupt
        return real(*args, on_step=step, **kwargs)
    monkeypatch.setattr(stages, "greedy_heads", stop_after_one_head)
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_llama, str(task_file), out=tmp_path, **kw)
    monkeypatch.setattr(stages, "greedy_heads", real)
    again = extract(tiny_llama, str(task_file), out=tmp_path, **kw)
    _same(again, whole)
    assert again.iv.meta["head_selection"]["heads"] == whole.iv.meta["head_selection"]["heads"]


def test_a_changed_setting_recomputes_only_the_stages_that_read_it(tmp_path, tiny_llama, task_file):
    first = extract(tiny_llama, str(task_file), top_k=2, out=tmp_path, **KW)
    assert first.resumed == ()
    other_scales = extract(tiny_llama, str(task_file), top_k=2, out=tmp_path, **{**KW, "scales": (2.0,)})
    assert set(other_scales.resumed) == {"prompts", "effects_shuffled"}  # the sweep ran again
    assert other_scales.sweep.scales == [2.0] and other_scales.iv.scale == 2.0
    other_seed = extract(tiny_llama, str(task_file), top_k=2, out=tmp_path, **{**KW, "seed": 3})
    assert other_seed.resumed == ()  # every stage reads the seed
    fresh = extract(tiny_llama, str(task_file), top_k=2, **{**KW, "seed": 3})
    _same(other_seed, fresh)
