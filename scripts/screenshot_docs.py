#!/usr/bin/env python
"""Screenshots of the built documentation site in a headless browser, to check how it looks.

    make docs && python scripts/screenshot_docs.py --out /tmp/screens

Serves ``site/`` on a local port and has Chromium (``--browser``, default ``chromium``) save a PNG
of each page in ``--pages`` (paths inside the site). Needs a Chromium or Chrome binary; nothing is
fetched from the network (the site serves its own plotly.js).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["", "reference/api/", "notebooks/extract_and_plot/", "forgetting/"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, default=ROOT / "site")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated paths inside the site ('' = home)")
    ap.add_argument("--browser", default="chromium")
    ap.add_argument("--size", default="1280,2400", help="window width,height in pixels")
    args = ap.parse_args()
    browser = shutil.which(args.browser)
    if browser is None:
        print(f"no {args.browser!r} on PATH: install Chromium (apt-get install chromium) or pass --browser",
              file=sys.stderr)
        return 2
    if not (args.site / "index.html").exists():
        print(f"{args.site} has no built site: run make docs first", file=sys.stderr)
        return 2
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(args.site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for page in args.pages.split(","):
            name = page.strip("/").replace("/", "_") or "home"
            url = f"http://127.0.0.1:{server.server_port}/{page}"
            png = args.out / f"{name}.png"
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={args.size}", "--virtual-time-budget=8000", f"--screenshot={png}", url],
                           check=True, capture_output=True, timeout=120)
            print(png)
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
