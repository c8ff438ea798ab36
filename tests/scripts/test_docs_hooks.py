"""scripts/docs_hooks.py: figure files in the built site load plotly.js from the site, not the CDN."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docs_hooks.py"
CDN = ('<script charset="utf-8" src="https://cdn.plot.ly/plotly-4.1.1.min.js" integrity="sha256-O24V" '
       'crossorigin="anonymous"></script>')


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_figures_point_at_the_sites_copy_at_any_depth(tmp_path):
    hooks = _hooks()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "plotly.min.js").write_text("// plotly")
    deep = tmp_path / "results" / "fig.html"
    deep.parent.mkdir()
    deep.write_text(f"<html><head>{CDN}</head><body>plot</body></html>")
    page = tmp_path / "index.html"
    page.write_text("<html>no figure</html>")
    assert hooks.rewrite_site(tmp_path) == 1
    text = deep.read_text()
    assert "cdn.plot.ly" not in text and 'src="../assets/plotly.min.js"' in text and "<body>plot</body>" in text
    assert page.read_text() == "<html>no figure</html>"
    assert hooks.rewrite_site(tmp_path) == 0  # idempotent


def test_the_build_stops_without_the_local_copy(tmp_path):
    import pytest

    with pytest.raises(RuntimeError, match="make docs"):
        _hooks().on_post_build({"site_dir": str(tmp_path)})
