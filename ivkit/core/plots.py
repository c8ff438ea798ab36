"""Plotly figures from arrays and data frames.

These functions know nothing of ivkit's result types: a result's ``.plot()`` hands them its
numbers. Every function returns a ``plotly`` Figure; `to_html` writes one to a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def head_heatmap(aie: Any, *, marked: Sequence[tuple[int, int]] = (), marked_name: str = "top heads",
                 numbered_by: str = "rank", title: str = "", colorbar: str = "AIE"):
    """Heatmap of a ``(n_layers, n_heads)`` array (layers as rows); ``marked`` heads are circled
    and numbered in the order given."""
    import plotly.graph_objects as go

    z = np.asarray(aie, dtype=float)
    n_layers, n_heads = z.shape
    lim = float(np.abs(z).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n_heads)), y=list(range(n_layers)), colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
        colorbar={"title": colorbar}, hovertemplate="layer %{y}, head %{x}<br>AIE %{z:.4g}<extra></extra>",
    ))
    if marked:
        fig.add_trace(go.Scatter(
            x=[h for _, h in marked], y=[l for l, _ in marked], mode="markers+text",
            marker={"symbol": "circle-open", "size": 16, "color": "black", "line": {"width": 2}},
            text=[str(i + 1) for i in range(len(marked))], textposition="middle right", name=marked_name,
            hovertemplate=numbered_by + " %{text}: layer %{y}, head %{x}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", xaxis={"dtick": 1},
                      yaxis={"autorange": True}, height=max(400, 18 * n_layers + 150),
                      width=max(500, 40 * n_heads + 250), showlegend=False)
    return fig


def sweep_lines(layers: Sequence[int], scales: Sequence[float], top1: Sequence[Sequence[float]],
                mean_prob: Sequence[Sequence[float]], *, baseline_top1: float, best: dict[str, Any],
                heads_top1: Sequence[float] | None = None, heads_prob: Sequence[float] | None = None,
                title: str = ""):
    """Top-1 accuracy against the injection layer, one line per scale (``top1[scale][layer]``);
    the heads injection, when given, as one point per scale in a column labelled "heads" after
    the last layer; the ``best`` cell (``{"layer", "top1"}``, layer None for heads) starred."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for si, sc in enumerate(scales):
        fig.add_trace(go.Scatter(
            x=list(layers), y=top1[si], mode="lines+markers", name=f"top-1, scale {sc:g}", customdata=mean_prob[si],
            hovertemplate="layer %{x}: top-1 %{y:.3f}, mean P(answer) %{customdata:.3f}<extra></extra>"))
    heads_x = (max(layers) + 2) if layers else 0
    if heads_top1 is not None:
        fig.add_trace(go.Scatter(
            x=[heads_x] * len(scales), y=list(heads_top1), mode="markers+text", name="heads injection",
            text=[f"x{sc:g}" for sc in scales], textposition="middle right",
            customdata=list(zip(scales, heads_prob or [])),
            hovertemplate="heads, scale %{customdata[0]}: top-1 %{y:.3f}, mean P(answer) %{customdata[1]:.3f}"
                          "<extra></extra>"))
        ticks = list(layers[::max(1, len(layers) // 10)]) + [heads_x]
        fig.update_xaxes(tickvals=ticks, ticktext=[str(t) for t in ticks[:-1]] + ["heads"])
    fig.add_hline(y=baseline_top1, line_dash="dash", annotation_text="no vector")
    fig.add_trace(go.Scatter(x=[heads_x if best["layer"] is None else best["layer"]], y=[best["top1"]],
                             mode="markers", name="chosen", marker={"symbol": "star", "size": 16, "color": "green"}))
    fig.update_layout(title=title, xaxis_title="layer the vector is added after", yaxis_title="top-1 accuracy",
                      yaxis={"range": [0, 1.02]})
    return fig


def accuracy_bars(frame: Any, *, title: str = "", x: str = "condition"):
    """Bars of top-1/2/3 accuracy per ``x`` value (columns ``top1``, ``top2``, ``top3``); the top-1
    bars carry error bars when ``top1_lo``/``top1_hi`` are all present."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(name=f"top-{k}", x=list(frame[x]), y=list(frame[f"top{k}"]))
                     for k in (1, 2, 3) if f"top{k}" in frame])
    if {"top1_lo", "top1_hi"} <= set(frame.columns) and frame[["top1_lo", "top1_hi"]].notna().all().all():
        fig.data[0].error_y = dict(type="data", array=list(frame["top1_hi"] - frame["top1"]),
                                   arrayminus=list(frame["top1"] - frame["top1_lo"]), visible=True)
    fig.update_layout(barmode="group", yaxis={"range": [0, 1]}, yaxis_title="accuracy", title=title)
    return fig


def tracking_panels(frame: Any, *, title: str = "",
                    accuracy_columns: dict[str, str] | None = None):
    """Two stacked panels over checkpoints, one line per task: ``iv_cosine`` on top, the accuracy
    columns (column -> line dash) below. ``frame`` has ``checkpoint``, ``task`` and those columns."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    dashes = accuracy_columns or {"zero_shot": "dot", "few_shot": "solid", "zero_shot_iv": "dash"}
    labels = list(dict.fromkeys(frame["checkpoint"]))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("IV cosine to the first checkpoint's", "accuracy (test, top-1)"))
    for task, sub in frame.groupby("task", sort=False):
        fig.add_trace(go.Scatter(x=sub["checkpoint"], y=sub["iv_cosine"], mode="lines+markers",
                                 name=f"{task}: IV cosine", legendgroup=task), row=1, col=1)
        for col, dash in dashes.items():
            fig.add_trace(go.Scatter(x=sub["checkpoint"], y=sub[col], mode="lines+markers", line={"dash": dash},
                                     name=f"{task}: {col.replace('_', ' ')}", legendgroup=task), row=2, col=1)
    fig.update_xaxes(categoryorder="array", categoryarray=labels)
    fig.update_yaxes(range=[-0.05, 1.05], row=2, col=1)
    fig.update_layout(height=700, title=title)
    return fig


def profile_lines(frame: Any, *, x: str, y: str, line: str, dash: str | None = None,
                  dashes: dict[str, str] | None = None, title: str = "", x_title: str = "", y_title: str = ""):
    """One line per value of ``line`` (and of ``dash``, drawn with ``dashes[value]``): ``y`` against
    ``x`` in a long data frame."""
    import plotly.graph_objects as go

    fig = go.Figure()
    keys = [line] + ([dash] if dash else [])
    for key, sub in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        name = f"{key[0]} ({key[1]})" if dash else str(key[0])
        style = {"dash": (dashes or {}).get(key[1], "solid")} if dash else {}
        fig.add_trace(go.Scatter(x=list(sub[x]), y=list(sub[y]), mode="lines", line=style, name=name,
                                 legendgroup=str(key[0])))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    return fig


def heatmap_slider(frames: Sequence[tuple[str, Any]], *, title: str = ""):
    """One ``(n_layers, n_heads)`` heatmap per ``(label, array)``, a slider choosing which shows."""
    import plotly.graph_objects as go

    lim = max(float(np.abs(np.asarray(a, dtype=float)).max()) for _, a in frames) or 1.0
    fig = go.Figure()
    for i, (label, a) in enumerate(frames):
        fig.add_trace(go.Heatmap(z=np.asarray(a, dtype=float), colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                                 visible=i == 0, name=label,
                                 hovertemplate="layer %{y}, head %{x}<br>AIE %{z:.4g}<extra></extra>"))
    steps = [{"method": "update", "label": label,
              "args": [{"visible": [j == i for j in range(len(frames))]}, {"title": f"{title} at {label}"}]}
             for i, (label, _) in enumerate(frames)]
    fig.update_layout(sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "checkpoint: "}}],
                      title=f"{title} at {frames[0][0]}", xaxis_title="head", yaxis_title="layer")
    return fig


def interval_lines(frame: Any, *, x: str, y: str, lo: str, hi: str, line: str, facet: str | None = None,
                   title: str = "", x_title: str = "", y_title: str = "", log_x: bool = False):
    """One line per value of ``line``, ``y`` against ``x`` with a shaded band from ``lo`` to ``hi``
    (an interval per point), in one panel per value of ``facet`` (side by side, shared y axis)."""
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS
    from plotly.subplots import make_subplots

    panels = list(dict.fromkeys(frame[facet])) if facet else [None]
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True,
                        subplot_titles=[str(p) for p in panels] if facet else None)
    colours = {name: DEFAULT_PLOTLY_COLORS[i % len(DEFAULT_PLOTLY_COLORS)]
               for i, name in enumerate(dict.fromkeys(frame[line]))}
    for col, panel in enumerate(panels, start=1):
        part = frame if panel is None else frame[frame[facet] == panel]
        for name, sub in part.groupby(line, sort=False):
            c = colours[name]
            xs, band = list(sub[x]), list(sub[hi]) + list(sub[lo])[::-1]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=band, fill="toself", fillcolor=c.replace("rgb", "rgba")
                                     .replace(")", ", 0.15)"), line={"width": 0}, hoverinfo="skip", showlegend=False,
                                     legendgroup=str(name)), row=1, col=col)
            fig.add_trace(go.Scatter(x=xs, y=list(sub[y]), mode="lines+markers", name=str(name), line={"color": c},
                                     legendgroup=str(name), showlegend=col == 1,
                                     customdata=list(zip(sub[lo], sub[hi])),
                                     hovertemplate=f"{name}: %{{y:.4g}} [%{{customdata[0]:.4g}}, "
                                                   f"%{{customdata[1]:.4g}}] at %{{x}}<extra></extra>"),
                          row=1, col=col)
        fig.update_xaxes(title_text=x_title, type="log" if log_x else None, row=1, col=col)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, height=450, width=max(600, 450 * len(panels)))
    return fig


def interval_bars(frame: Any, *, x: str, y: str, lo: str, hi: str, title: str = "", y_title: str = ""):
    """One bar per row of ``frame``: ``y`` at ``x``, with an error bar from ``lo`` to ``hi``."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(frame[x]), y=list(frame[y]), error_y={
        "type": "data", "array": list(frame[hi] - frame[y]), "arrayminus": list(frame[y] - frame[lo]), "visible": True}))
    fig.update_layout(title=title, yaxis_title=y_title)
    return fig


def to_html(fig: Any, path: str | Path, *, self_contained: bool = True) -> None:
    """Write a figure as an HTML file, atomically: self-contained (works offline, ~4 MB) or
    loading plotly.js from its CDN (small; for committed docs). The figure's element id comes from
    the file name, so rewriting the same figure gives the same file."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), fig.to_html(include_plotlyjs=True if self_contained else "cdn", full_html=True,
                                              div_id=f"plot-{Path(path).stem}"))


def token_bars(tokens: Sequence[str], values: Sequence[float], *, title: str = "", value_title: str = "value"):
    """Horizontal bars, one per token (shown quoted, so spaces are visible), in the order given
    (top to bottom)."""
    import plotly.graph_objects as go

    labels = [f"{i + 1}. {t!r}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Bar(x=list(values), y=labels, orientation="h",
                           marker={"color": ["#2166ac" if v >= 0 else "#b2182b" for v in values]}))
    fig.update_layout(title=title, xaxis_title=value_title, yaxis={"autorange": "reversed"},
                      height=max(350, 22 * len(tokens) + 150))
    return fig


def token_grid(values: Sequence[Sequence[float]], tokens: Sequence[Sequence[str]], *, rows: Sequence[str],
               title: str = "", value_title: str = "value"):
    """A heatmap of ``values[row][rank]`` with each cell labelled by ``tokens[row][rank]``."""
    import plotly.graph_objects as go

    z = np.asarray(values, dtype=float)
    fig = go.Figure(go.Heatmap(z=z, x=[f"#{i + 1}" for i in range(z.shape[1] if z.ndim == 2 else 0)], y=list(rows),
                               text=[[repr(t) for t in r] for r in tokens], texttemplate="%{text}",
                               colorscale="Blues", colorbar={"title": value_title},
                               hovertemplate="%{y}, %{x}: %{text} %{z:.3g}<extra></extra>"))
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, height=max(400, 24 * len(rows) + 150))
    return fig


def grouped_interval_bars(frame: Any, *, x: str, y: str, lo: str, hi: str, group: str, title: str = "",
                          y_title: str = ""):
    """Bars of ``y`` at each ``x``, one bar per value of ``group`` side by side, each with an error
    bar from ``lo`` to ``hi``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, sub in frame.groupby(group, sort=False):
        fig.add_trace(go.Bar(name=str(name), x=list(sub[x]), y=list(sub[y]), error_y={
            "type": "data", "array": list(sub[hi] - sub[y]), "arrayminus": list(sub[y] - sub[lo]), "visible": True}))
    fig.update_layout(barmode="group", title=title, yaxis_title=y_title, yaxis={"range": [0, 1.05]})
    return fig
