"""scripts/conjugate_study.py's Timer: a stage's seconds are added until a run completes it; a
rerun that only loads the stage's stored results adds nothing."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "conjugate_study.py"


def _timer_class():
    spec = importlib.util.spec_from_file_location("conjugate_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Timer


def test_a_completed_stage_is_not_timed_again(tmp_path):
    Timer = _timer_class()
    path = tmp_path / "timings.json"
    Timer(path).record("probe", 12.0)
    again = Timer(path)  # a rerun: the probe is only loaded from disk
    again.record("probe", 0.3)
    again.record("diagnosis", 5.0)
    data = json.loads(path.read_text())
    assert data["probe"] == 12.0 and data["diagnosis"] == 5.0 and data["complete"] == ["probe", "diagnosis"]
