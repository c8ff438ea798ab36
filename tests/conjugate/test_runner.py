"""Runs are stored as they finish and loaded by a rerun; a model by path loads only when needed."""

import json

from ivkit.conjugate.probe import build_probe
from ivkit.conjugate.runner import LazyModel, cached_run, conjugate
from ivkit.conjugate.transforms import identity, pig_latin


def test_stored_runs_are_loaded_and_keys_do_not_change_on_load(tiny_llama_dir, tmp_path):
    items = build_probe(["repeat"], n=2)
    lm = LazyModel(str(tiny_llama_dir), "m")
    key = lm.key
    first = cached_run(tmp_path, lm, items, identity(), max_new_tokens=2, progress=False)
    assert lm.key == key  # loading the model does not change which stored runs match
    fresh = LazyModel(str(tiny_llama_dir), "m")
    again = cached_run(tmp_path, fresh, items, identity(), max_new_tokens=2, progress=False)
    assert again == first and fresh._model is None  # loaded from disk, the model never loaded
    other = cached_run(tmp_path, fresh, items, identity(), max_new_tokens=3, progress=False)  # another setting
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2 and other.records[0].new_ids[:2] == first.records[0].new_ids


def test_conjugate_adds_the_plain_prompts_and_records_its_settings(tiny_llama, tmp_path):
    res = conjugate(tiny_llama, None, build_probe(["repeat"], n=2), [pig_latin()], out=tmp_path, max_new_tokens=2,
                    progress=False)
    assert res.transforms == ["none", "piglatin"] and res.tuned is None
    assert res.info["engine"] == "generate_ids" and res.info["n_items"] == 2
    stored = json.loads(next((tmp_path / "runs").glob("base__piglatin*")).read_text())
    assert stored["run"]["transform"] == "piglatin" and len(stored["run"]["records"]) == 2


def test_runs_stored_without_the_scoring_fields_are_upgraded(tiny_llama, tmp_path):
    items = build_probe(["repeat"], n=3)
    lm = LazyModel(tiny_llama, "m")
    run = cached_run(tmp_path, lm, items, pig_latin(), max_new_tokens=2, progress=False)
    path = next((tmp_path / "runs").glob("*.json"))
    stored = json.loads(path.read_text())
    for r in stored["run"]["records"]:  # as written before records kept these
        for k in ("instruction_answers", "exhausted", "exact"):
            r.pop(k)
        r["outcome"] = "stale"
    path.write_text(json.dumps(stored))
    again = cached_run(tmp_path, lm, items, pig_latin(), max_new_tokens=2, progress=False)
    assert again == run
    assert all("exhausted" in r for r in json.loads(path.read_text())["run"]["records"])
