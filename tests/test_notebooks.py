"""The notebooks in docs/notebooks run top to bottom (on a tiny model, small settings), so they can't rot,
and show what they promise: the files, the six conditions, the checkpoints compared."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "docs" / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"extract_and_plot.ipynb", "compare_checkpoints.ipynb",
                                           "iv_guided_training.ipynb", "conjugate_prompting.ipynb"}


def _inject_parameters(nb, params: dict) -> None:
    """What papermill does: a cell after the one tagged ``parameters`` that overrides its values."""
    import nbformat

    at = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(at) == 1, "each notebook has exactly one cell tagged 'parameters'"
    nb.cells.insert(at[0] + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))


def test_no_test_scaffolding_is_visible():
    import nbformat

    for path in NOTEBOOKS:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "IVKIT_NB" not in text and "SMALL" not in text and "os.environ" not in text, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tiny_llama_dir, task_file, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:  # the stored outputs (from the real model) must not count as this run's
        if c.cell_type == "code":
            c.outputs = []
    small = dict(MODEL=str(tiny_llama_dir), TASK=str(task_file), TRAIN=str(task_file), N_TEST=8, STEPS=4, SAVE_EVERY=2,
                 SETTINGS=dict(shots=3, mean_prompts=5, trials=2, sweep_prompts=6, filter_correct=False, scales=(1.0,)),
                 TRACK=dict(n_prompts=6, alignment_prompts=4), HELD_APART=[str(task_file)],
                 N=3)
    _inject_parameters(nb, small)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures, "the notebook should display plotly figures"
    text = "\n".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)
    if path.stem == "extract_and_plot":
        from ivkit.evaluation import CONDITIONS

        assert all(c in text for c in CONDITIONS), "the evaluation table shows the six conditions"
        assert all(f in text for f in ("iv.json", "iv.safetensors", "indirect_effects.json", "heads.html"))
        assert "InstructionVector(" in text and "k=10" in text
    elif path.stem == "compare_checkpoints":  # the base and the two checkpoints of the 4-step run, in order
        table = next(o["data"]["text/plain"] for o in outputs if "iv_cosine" in o.get("data", {}).get("text/plain", ""))
        assert table.index("base") < table.index("checkpoint-2") < table.index("checkpoint-4")
    elif path.stem == "iv_guided_training":  # both arms tracked, and the guided terms logged
        table = next(o["data"]["text/plain"] for o in outputs if "iv_cosine" in o.get("data", {}).get("text/plain", ""))
        assert table.index("base") < table.index("plain") < table.index("guided")
        assert "kl" in text.lower()
    else:  # conjugate_prompting: the rate per transform, and the round trips back to the text
        assert "leet" in text and "piglatin" in text.replace("_", "").replace(" ", "").lower()
        assert text.count("back: 'Repeat the input: how many legs does a spider have?'") == 2
