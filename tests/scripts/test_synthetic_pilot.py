"""scripts/synthetic_pilot.py on a tiny network: it pretrains, measures every checkpoint on
validation prompts, and keeps one row per setting in pilot.jsonl (a rerun replaces its row)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "synthetic_pilot.py"
TINY = ["--n-embd", "16", "--n-layer", "1", "--n-head", "2", "--steps", "4", "--save-every", "2", "--points-steps", "0",
        "--dims-steps", "0", "--n-validation", "40", "--batch-size", "4"]


def _run(*args):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_pilot_rows(tmp_path):
    _run("--out", tmp_path / "a", "--n-discrete", 4, *TINY)
    _run("--out", tmp_path / "b", "--n-discrete", 8, *TINY)
    _run("--out", tmp_path / "a", "--n-discrete", 4, *TINY)  # resumed: trains nothing, replaces row a
    rows = [json.loads(line) for line in (tmp_path / "pilot.jsonl").read_text().splitlines()]
    assert [Path(r["out"]).name for r in rows] == ["b", "a"]
    a = rows[1]
    assert a["task"]["n_discrete"] == 4 and [c["step"] for c in a["checkpoints"]] == [2, 4]
    last = a["checkpoints"][-1]
    d = last["discrete"]
    assert d["discrete"] < d["ridge"]  # the discrete Bayes predictor wins on its own prior
    m, lo, hi = d["over_ridge"]
    assert lo <= m <= hi and abs((d["ridge"] - d["net"]) - m) < 1e-9
    assert abs(last["discrete_gain"] - (d["ridge"] - d["net"]) / (d["ridge"] - d["discrete"])) < 1e-9
    assert 0.0 <= last["implied_p"][0] <= 1.0
