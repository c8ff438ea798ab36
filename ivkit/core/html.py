"""Small, self-contained HTML for notebook display (``_repr_html_``): a table, a heat map of a
layers x heads array, a line of numbers as an inline SVG. No JavaScript and nothing fetched, so a
result reads the same in any notebook viewer, offline; ``.plot()`` gives the interactive figure."""

from __future__ import annotations

import html
from typing import Any, Sequence

import numpy as np


def table(rows: Sequence[dict[str, Any]], *, caption: str = "", digits: int = 3) -> str:
    """An HTML table of ``rows`` (dicts with the same keys), numbers rounded."""
    if not rows:
        return f"<p>{html.escape(caption)} (empty)</p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:.{digits}f}"
        return html.escape("-" if v is None else str(v))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heat(values: Any, *, marked: Sequence[tuple[int, int]] = (), caption: str = "", cell_px: int = 12) -> str:
    """A ``(rows, cols)`` array as a grid of coloured cells (blue negative, red positive, white 0);
    ``marked`` cells get a black outline. Rows are layers, columns heads."""
    z = np.asarray(values, dtype=float)
    lim = float(np.abs(z).max()) or 1.0
    marks = {tuple(m) for m in marked}

    def colour(v: float) -> str:
        a = min(1.0, abs(v) / lim)
        r, g, b = (255, int(255 * (1 - a)), int(255 * (1 - a))) if v > 0 else (int(255 * (1 - a)), int(255 * (1 - a)), 255)
        return f"rgb({r},{g},{b})"
    rows = []
    for i, row in enumerate(z):
        cells = "".join(
            f"<td title='layer {i}, head {j}: {v:.4g}' style='width:{cell_px}px;height:{cell_px}px;padding:0;"
            f"background:{colour(v)};{'outline:2px solid black;' if (i, j) in marks else ''}'></td>"
            for j, v in enumerate(row))
        rows.append(f"<tr><td style='font-size:9px;padding:0 4px'>{i}</td>{cells}</tr>")
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table style='border-collapse:collapse'>{cap}{''.join(rows)}</table>"


def sparkline(values: Sequence[float], *, width: int = 240, height: int = 48, caption: str = "") -> str:
    """A line of numbers as an inline SVG, its first and last values written beside it."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return f"<p>{html.escape(caption)}: {', '.join(f'{x:.4g}' for x in v)}</p>"
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    span = (hi - lo) or 1.0
    pts = " ".join(f"{i * width / (len(v) - 1):.1f},{height - (x - lo) / span * height:.1f}" for i, x in enumerate(v))
    return (f"<div>{html.escape(caption)} <svg width='{width}' height='{height}'><polyline fill='none' "
            f"stroke='steelblue' stroke-width='1.5' points='{pts}'/></svg> {v[0]:.4g} &rarr; {v[-1]:.4g}</div>")
