#!/usr/bin/env python
"""Execute the notebooks in ``docs/notebooks`` on the embedded SmolLM2 and store their outputs.

    python scripts/run_notebooks.py                      # every notebook
    python scripts/run_notebooks.py extract_and_plot     # one

Each notebook runs top to bottom in a fresh kernel, in a temporary working directory, with its
own parameters (its cell tagged ``parameters``: the embedded SmolLM2-135M-Instruct and ivkit's
defaults). Plotly figures are stored as their JSON and a small HTML snippet that draws them with
the plotly.js the documentation site serves itself, so the rendered pages show live figures
offline. A last markdown cell (tagged ``provenance``) records the command,
the machine, the versions and the seconds; it is replaced on every run. The tests run the same
notebooks on a tiny model with small parameters (``tests/test_notebooks.py``), so they cannot rot.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "docs" / "notebooks"
log = logging.getLogger("run_notebooks")


def provenance(name: str, seconds: float) -> str:
    from ivkit.core.machine import machine_info

    m = machine_info()
    return (f"*Outputs above: `python scripts/run_notebooks.py {name}`, {seconds / 60:.1f} min on {m['cpu']} "
            f"({m['cores']} cores, CPU only), Python {m['python']}, torch {m['torch']}, transformers "
            f"{m['transformers']}, ivkit {m['ivkit']}. The embedded models run 4-bit GGUF weights de-quantised to "
            f"float32 (SmolLM2-135M-Instruct Q4_1, gemma-3-270m Q4_K_M).*")


def run(path: Path) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "provenance" not in c.metadata.get("tags", [])]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ivkit-nb-") as work:
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    seconds = time.perf_counter() - t0
    cell = nbformat.v4.new_markdown_cell(provenance(path.stem, seconds))
    cell.metadata["tags"] = ["provenance"]
    nb.cells.append(cell)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="notebook names (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    # The figures' HTML expects plotly.js on the page: the site serves its own copy (make docs), so the stored
    # notebooks stay small and the pages render offline; in Jupyter the renderer fetches it from its CDN.
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook_connected")
    os.environ.setdefault("PYTHONWARNINGS", "ignore:IProgress not found")  # tqdm's note about ipywidgets
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = [NOTEBOOKS / f"{n}.ipynb" for n in args.names] if args.names else sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"no such notebook: {', '.join(missing)} (they live in {NOTEBOOKS})")
    for p in paths:
        log.info("%s: %.0f s", p.name, run(p))


if __name__ == "__main__":
    main()
