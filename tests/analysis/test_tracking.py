import json

import pytest
import torch

import ivkit
from ivkit import CheckpointSeries, track
from ivkit.core.errors import TaskError
from ivkit.models.checkpoints import CheckpointError

from ..conftest import make_tiny

SMALL = dict(n_prompts=6, alignment_prompts=4, shots=3, mean_prompts=5, trials=2, top_k=3, filter_correct=False,
             progress=False, scales=(1.0,))


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def llama_dir(tmp_path, tokenizer):
    return _save(make_tiny("llama", len(tokenizer)), tokenizer, tmp_path / "ckpt-0")


def test_same_checkpoint_twice_gives_similarity_one(llama_dir, task_file):
    series = CheckpointSeries.from_dirs([llama_dir, llama_dir], labels=["a", "b"], allow_duplicates=True)
    tr = track(series, str(task_file), mode="rerank", **SMALL)
    df = tr.to_pandas()
    assert list(df["checkpoint"]) == ["a", "b"]
    assert df["iv_cosine"].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert df["head_jaccard"].tolist() == [1.0, 1.0]
    assert df["aie_spearman"].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    a, b = tr.records
    for key in ("zero_shot", "few_shot", "zero_shot_iv"):
        assert a[key] == b[key]
    assert len(a["alignment_zero_shot"]) == 3 and a["alignment_few_shot"] == pytest.approx(b["alignment_few_shot"])


def test_perturbing_the_top_heads_W_O_lowers_similarity(tmp_path, tokenizer, llama_dir, task_file):
    first = track([llama_dir], str(task_file), **SMALL)
    heads = first.references[task_file.stem].heads
    model = ivkit.load_model(str(llama_dir))
    g = model.geometry
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for layer, head in heads:
            W = model.attn_out_proj(layer).weight
            W[:, head * g.d_head:(head + 1) * g.d_head] = torch.randn(W.shape[0], g.d_head, generator=gen) * 0.15
    broken = _save(model.model, tokenizer, tmp_path / "broken")
    # Only the W_O slices of the reference heads changed; the fixed-heads IV pushes the same heads'
    # means through the new W_O, so it must turn away from the reference.
    tr = track([llama_dir, broken], str(task_file), mode="fixed", **SMALL)
    cos = tr.to_pandas()["iv_cosine"].tolist()
    assert cos[0] == pytest.approx(1.0, abs=1e-6)
    assert cos[1] < 0.9


def test_interrupted_sweep_resumes_to_the_same_table(tmp_path, tokenizer, llama_dir, task_file, monkeypatch):
    other = make_tiny("llama", len(tokenizer))
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    second = _save(other, tokenizer, tmp_path / "ckpt-1")
    straight = track([llama_dir, second], str(task_file), out=tmp_path / "straight", **SMALL)

    import ivkit.analysis.tracking as an

    real = an._measure
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*a, **k)

    monkeypatch.setattr(an, "_measure", flaky)
    with pytest.raises(KeyboardInterrupt):
        track([llama_dir, second], str(task_file), out=tmp_path / "resumed", **SMALL)
    assert (tmp_path / "resumed" / "ckpt-0" / f"{task_file.stem}.json").exists()
    assert not (tmp_path / "resumed" / "ckpt-1").exists()
    monkeypatch.setattr(an, "_measure", real)
    resumed = track([llama_dir, second], str(task_file), out=tmp_path / "resumed", **SMALL)
    assert resumed.to_pandas().equals(straight.to_pandas())
    resumed.save(tmp_path / "report")
    for f in ("tracking.csv", "tracking.json", "tracking.html", f"alignment_{task_file.stem}.html"):
        assert (tmp_path / "report" / f).exists()
    assert json.loads((tmp_path / "report" / "tracking.json").read_text())["mode"] == "fixed"


def test_resume_refuses_other_settings_and_rebuilds_references_on_the_first_checkpoint(
        tmp_path, tokenizer, llama_dir, task_file):
    import shutil

    other = make_tiny("llama", len(tokenizer))
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    second = _save(other, tokenizer, tmp_path / "ckpt-1")
    out = tmp_path / "sweep"
    first = track([llama_dir, second], str(task_file), out=out, **SMALL)
    with pytest.raises(ivkit.IVKitError, match="other settings .*mode: 'fixed' then, 'rerank' now"):
        track([llama_dir, second], str(task_file), out=out, mode="rerank", **SMALL)
    with pytest.raises(ivkit.IVKitError, match="reference checkpoint: 'ckpt-0' then, 'ckpt-1' now"):
        track([second, llama_dir], str(task_file), out=out, **SMALL)
    # Only the second checkpoint has work left and the reference is gone: it must be rebuilt on the
    # first checkpoint, not on the one being measured (then its IV cosine would be 1).
    shutil.rmtree(out / "reference")
    (out / "ckpt-1" / f"{task_file.stem}.json").unlink()
    again = track([llama_dir, second], str(task_file), out=out, **SMALL)
    assert again.to_pandas().equals(first.to_pandas())
    # A checkpoint whose weights changed since its records were written is caught when it is loaded.
    changed = make_tiny("llama", len(tokenizer))
    with torch.no_grad():
        changed.model.layers[0].mlp.up_proj.weight.mul_(0.5)
    _save(changed, tokenizer, second)
    with pytest.raises(CheckpointError, match="measured on other weights than checkpoint 'ckpt-1'"):
        # a second task gives the checkpoint work left, so it is loaded and its old record checked
        track([llama_dir, second], [str(task_file), "antonym"], out=out, **SMALL)


def test_bad_inputs(tmp_path, tokenizer, llama_dir, task_file):
    with pytest.raises(CheckpointError, match="empty"):
        track([], str(task_file), **SMALL)
    with pytest.raises(CheckpointError, match="does not exist"):
        track([llama_dir, tmp_path / "nope"], str(task_file), **SMALL)
    gemma = _save(make_tiny("gemma3", len(tokenizer)), tokenizer, tmp_path / "gemma")
    with pytest.raises(CheckpointError, match="another architecture"):
        track([llama_dir, gemma], str(task_file), **SMALL)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"input": f"w{i}", "output": "\n7"} for i in range(30)]))
    with pytest.raises(TaskError, match="no usable first token|none of the"):
        track([llama_dir], str(bad), **SMALL)
    with pytest.raises(ValueError, match="mode"):
        track([llama_dir], str(task_file), mode="other", **SMALL)


def test_rerank_heatmap_has_a_slider(llama_dir, task_file, tmp_path, tokenizer):
    other = make_tiny("llama", len(tokenizer))
    with torch.no_grad():
        other.model.layers[0].self_attn.o_proj.weight.mul_(2.0)
    second = _save(other, tokenizer, tmp_path / "ckpt-1")
    tr = track([llama_dir, second], str(task_file), mode="rerank", **SMALL)
    fig = tr.plot_heads(task_file.stem)
    assert len(fig.data) == 2 and len(fig.layout.sliders[0].steps) == 2
    assert tr.plot().data and tr.plot_alignment(task_file.stem).data


def test_resweep_scores_the_checkpoints_own_iv_and_foreign_alignment(llama_dir, task_file):
    """On the reference checkpoint itself, the own IV is the reference IV (same heads, same prompts),
    so its re-chosen layer and its test score are the reference's own sweep; the foreign alignment
    with the reference is the task's own alignment peak."""
    from ivkit.evaluation import evaluation_prompts, score_prompts

    series = CheckpointSeries.from_dirs([llama_dir], labels=["a"])
    tr = track(series, str(task_file), resweep=True, sweep_prompts=6, **SMALL)
    ref = tr.references["mini_antonym"]
    tr2 = track(CheckpointSeries.from_dirs([llama_dir], labels=["a"]), str(task_file), resweep=True, sweep_prompts=6,
                references={"mini_antonym": ref}, foreign={"same": ref}, **SMALL)
    r = tr2.records[0]
    assert r["own_layer"] == ref.layer and r["own_scale"] == ref.scale
    model = ivkit.load_model(str(llama_dir))
    test = evaluation_prompts(model, ivkit.load_task(str(task_file)), n_prompts=6, shots=3, seed=0)["zero_shot"]
    assert r["zero_shot_own_iv"] == score_prompts(model, test, vector=ref).accuracy(1)
    assert r["zero_shot_own_iv_lo"] <= r["zero_shot_own_iv"] <= r["zero_shot_own_iv_hi"]
    assert r["alignment_to/same"] == pytest.approx(max(r["alignment_zero_shot"]))
    assert {"zero_shot_iv_loose", "few_shot_lo", "few_shot_hi"} <= set(tr2.to_pandas().columns)


def test_fixed_mode_with_given_references_skips_the_reference_effects(llama_dir, task_file, tmp_path, monkeypatch):
    """The reference's AIE is read only when heads are re-ranked: a fixed-mode sweep with a given IV
    must not pay for it, and must resume from what it saved."""
    import ivkit.analysis.tracking as tracking_module

    ref = track(CheckpointSeries.from_dirs([llama_dir], labels=["a"]), str(task_file), **SMALL).references["mini_antonym"]

    def no_effects(*a, **k):
        raise AssertionError("effects computed in fixed mode")

    monkeypatch.setattr(tracking_module, "effects_stage", no_effects)
    out = tmp_path / "sweep"
    series = CheckpointSeries.from_dirs([llama_dir], labels=["a"])
    first = track(series, str(task_file), references={"mini_antonym": ref}, out=out, **SMALL)
    saved = json.loads((out / "reference" / "mini_antonym" / "prompts.json").read_text())
    assert saved["aie"] is None and saved["corrupted"]
    again = track(series, str(task_file), references={"mini_antonym": ref}, out=out, **SMALL)
    assert again.records == first.records
