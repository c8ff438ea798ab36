"""mkdocs hook (mkdocs.yml `hooks:`): the figure pages in the built site load plotly.js from the site itself.

The committed figure files (``docs/**/*.html``, written by ``to_html(..., self_contained=False)``)
load plotly.js from its CDN, so they stay small and open anywhere with a network. In the built site
that tag is rewritten to the copy ``make docs`` puts in ``assets/plotly.min.js``, so every figure
draws offline too. Only ``site/`` changes; the files under ``docs/`` keep the CDN tag.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CDN_TAG = re.compile(r'<script[^>]*src="https://cdn\.plot\.ly/plotly-[0-9.]+(?:\.min)?\.js"[^>]*></script>')


def offline(html: str, asset: str) -> str:
    """``html`` with its plotly CDN script tag pointing at ``asset`` (a relative URL) instead."""
    return CDN_TAG.sub(lambda _: f'<script charset="utf-8" src="{asset}"></script>', html)


def rewrite_site(site: Path) -> int:
    """Rewrite every figure file under ``site``; the number of files changed."""
    asset, changed = site / "assets" / "plotly.min.js", 0
    for path in site.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        if "cdn.plot.ly" not in text:
            continue
        new = offline(text, Path(os.path.relpath(asset, path.parent)).as_posix())
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def on_post_build(config, **kwargs) -> None:
    site = Path(config["site_dir"])
    if not (site / "assets" / "plotly.min.js").exists():
        raise RuntimeError("assets/plotly.min.js is missing from the site: build it with `make docs`, which copies it "
                           "from the installed plotly")
    rewrite_site(site)
