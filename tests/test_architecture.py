"""The layering holds: no import loop, no import from a lower floor to a higher one, no function
over 80 lines (scripts/check_architecture.py; docs/architecture.md draws the floors)."""

import importlib.util
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "check_architecture.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_architecture", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ivkit_flows_downward_only():
    problems, graph = _checker().check()
    assert problems == []
    assert len(graph) > 40 and "ivkit.mediation.fast" in graph["ivkit.mediation.dispatch"]


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "ivkit" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "ivkit"


def test_the_check_finds_an_upward_import_a_loop_and_a_long_function(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(85))
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/low.py": "from ..models.high import thing\n",                      # upward
        "models/__init__.py": "",
        "models/high.py": "thing = 1\n",
        "models/a.py": "def f():\n    from .b import g\n",                     # a loop, hidden in a function
        "models/b.py": "from .a import f\n",
        "models/long.py": f"def long():\n{long_body}\n",
    })
    problems, _ = _checker().check(pkg, {"ivkit": 10, "ivkit.core": 0, "ivkit.models": 1})
    text = "\n".join(problems)
    assert "ivkit.core.low (floor 0) imports ivkit.models.high (floor 1)" in text
    assert "import loop: ivkit.models.a <-> ivkit.models.b" in text
    assert "long() is 86 lines" in text
    assert len(problems) == 3
