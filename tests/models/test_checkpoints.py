import pytest
import torch

from ivkit import CheckpointSeries
from ivkit.models.checkpoints import CheckpointError, fingerprint

from ..conftest import make_tiny


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def three_dirs(tmp_path, tokenizer):
    """Three checkpoints of one tiny Llama: the original and two perturbed copies."""
    dirs = []
    for i in range(3):
        m = make_tiny("llama", len(tokenizer))
        with torch.no_grad():
            m.model.layers[0].self_attn.o_proj.weight.add_(0.01 * i)
        dirs.append(_save(m, tokenizer, tmp_path / f"checkpoint-{[2, 10, 30][i]}"))
    return dirs


def test_series_loads_in_order_with_distinct_fingerprints(three_dirs):
    series = CheckpointSeries.from_dirs(three_dirs)
    labels, fps = [], []
    for ck, model in series:
        labels.append(ck.label)
        fps.append(fingerprint(model))
    assert labels == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    assert len(set(fps)) == 3 and list(series.fingerprints.values()) == fps
    assert [c.step for c in series.checkpoints] == [2, 10, 30]


def test_trainer_dir_is_ordered_by_step(tmp_path, three_dirs):
    run = three_dirs[0].parent
    series = CheckpointSeries.from_trainer_dir(run, include_base=three_dirs[0])
    assert series.labels == ["base", "checkpoint-2", "checkpoint-10", "checkpoint-30"]


def test_repeated_weights_are_caught(three_dirs):
    series = CheckpointSeries.from_dirs([three_dirs[0], three_dirs[0]], labels=["a", "b"])
    series.load(0)
    with pytest.raises(CheckpointError, match="same weights as 'a'"):
        series.load(1)
    ok = CheckpointSeries.from_dirs([three_dirs[0], three_dirs[0]], labels=["a", "b"], allow_duplicates=True)
    ok.load(0), ok.load(1)
    assert ok.fingerprints["a"] == ok.fingerprints["b"]


def test_bad_series(tmp_path, tokenizer, three_dirs):
    with pytest.raises(CheckpointError, match="empty"):
        CheckpointSeries([])
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointSeries.from_dirs([three_dirs[0], tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        CheckpointSeries.from_dirs([tmp_path / "empty"])
    with pytest.raises(CheckpointError, match="no checkpoint-<step> folders"):
        CheckpointSeries.from_trainer_dir(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="labels repeat"):
        CheckpointSeries.from_dirs(three_dirs[:2], labels=["x", "x"])
    other = _save(make_tiny("gemma3", len(tokenizer)), tokenizer, tmp_path / "gemma")
    series = CheckpointSeries.from_dirs([three_dirs[0], other])
    series.load(0)
    with pytest.raises(CheckpointError, match="another architecture"):
        series.load(1)


def test_hub_revisions_from_the_local_hub_cache(tmp_path, monkeypatch, three_dirs):
    """``from_hub`` resolves branch names (Pythia-style ``step*``) through the Hugging Face cache:
    a cache laid out as the hub client writes it, read offline."""
    import shutil

    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    repo = cache / "models--ivkit-test--tiny"
    for i, d in enumerate(three_dirs):
        sha = f"{i + 1:040x}"
        shutil.copytree(d, repo / "snapshots" / sha)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / f"step{[2, 10, 30][i]}").write_text(sha)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    series = CheckpointSeries.from_hub("ivkit-test/tiny", ["step2", "step10", "step30"], cache_dir=str(cache))
    assert [c.step for c in series.checkpoints] == [2, 10, 30]
    got = [fingerprint(model) for _, model in series]
    want = [fingerprint(model) for _, model in CheckpointSeries.from_dirs(three_dirs)]
    assert got == want  # each revision is the checkpoint it names
    with pytest.raises(CheckpointError):
        CheckpointSeries.from_hub("ivkit-test/tiny", ["step999"], cache_dir=str(cache)).load(0)


def test_iterating_a_series_keeps_one_model_in_memory(tmp_path, tokenizer):
    dirs = []
    for i in range(2):
        m = make_tiny("llama", len(tokenizer), std=0.1 + 0.05 * i)
        m.save_pretrained(tmp_path / f"c{i}")
        tokenizer.save_pretrained(tmp_path / f"c{i}")
        dirs.append(tmp_path / f"c{i}")
    kept = []
    for ck, model in CheckpointSeries.from_dirs(dirs):
        assert all(p.device.type != "meta" for p in model.model.parameters())  # usable in its iteration
        kept.append(model)
    # the first one's weights were freed before the second loaded, although the caller kept it
    assert all(p.device.type == "meta" for p in kept[0].model.parameters())
