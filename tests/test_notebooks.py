"""The notebooks in docs/notebooks run top to bottom (on a tiny model, small settings), so they can't rot,
and show what they promise: the files, the six conditions, the checkpoints compared."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "docs" / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"extract_and_plot.ipynb", "compare_checkpoints.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tiny_llama_dir, task_file, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("IVKIT_NB_MODEL", str(tiny_llama_dir))
    monkeypatch.setenv("IVKIT_NB_TASK", str(task_file))
    monkeypatch.setenv("IVKIT_NB_TRAIN", str(task_file))
    monkeypatch.setenv("IVKIT_NB_SMALL", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(path, as_version=4)
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
    else:  # compare_checkpoints: the base and the two checkpoints of the 4-step run, in order
        table = next(o["data"]["text/plain"] for o in outputs if "iv_cosine" in o.get("data", {}).get("text/plain", ""))
        assert table.index("base") < table.index("checkpoint-2") < table.index("checkpoint-4")
