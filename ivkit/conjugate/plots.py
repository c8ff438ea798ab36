"""Plotly figures of conjugate-prompting results, from plain data frames.

Like `ivkit.core.plots`, these know nothing of the result types: a result's ``.plot()``
hands them a frame.
"""

from __future__ import annotations

from typing import Any, Sequence


def grouped_bars(frame: Any, *, x: str, group: str, y: str, lo: str | None = None, hi: str | None = None,
                 facet: str | None = None, title: str = "", y_title: str = "", y_range: Sequence[float] | None = None,
                 hover: str | None = None):
    """Bars of ``y`` per ``x``, one colour per ``group`` value, one panel per ``facet`` value,
    with error bars from the ``lo``/``hi`` columns where they are given (missing bounds: none)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    panels = list(dict.fromkeys(frame[facet])) if facet else [None]
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, subplot_titles=[str(p) for p in panels]
                        if facet else None, horizontal_spacing=0.04)
    groups = list(dict.fromkeys(frame[group]))
    for c, panel in enumerate(panels, 1):
        sub = frame if panel is None else frame[frame[facet] == panel]
        for gi, g in enumerate(groups):
            part = sub[sub[group] == g]
            err = None
            if lo and hi and part[[lo, hi]].notna().all().all() and len(part):
                err = dict(type="data", array=list(part[hi] - part[y]), arrayminus=list(part[y] - part[lo]),
                           visible=True)
            fig.add_trace(go.Bar(x=list(part[x]), y=list(part[y]), name=str(g), error_y=err, legendgroup=str(g),
                                 showlegend=c == 1, marker_color=qualitative.Plotly[gi % 10],
                                 hovertext=list(part[hover]) if hover else None), row=1, col=c)
    fig.update_layout(barmode="group", title=title, height=450, width=max(600, 320 * len(panels)))
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    return fig


def layer_profiles(frame: Any, *, layer: str, y: str, line: str, dash: str | None = None,
                   marked_layer: int | None = None, title: str = "", y_title: str = ""):
    """``y`` against ``layer``, one line per ``line`` value (dotted for the second ``dash`` value
    onwards); a dashed vertical line at ``marked_layer``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    dashes = list(dict.fromkeys(frame[dash])) if dash else []
    keys = [line] + ([dash] if dash else [])
    for key, sub in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        style = {"dash": "solid" if not dash or dashes.index(key[1]) == 0 else "dot"}
        fig.add_trace(go.Scatter(x=list(sub[layer]), y=list(sub[y]), mode="lines", line=style,
                                 name=" / ".join(str(k) for k in key)))
    if marked_layer is not None:
        fig.add_vline(x=marked_layer, line_dash="dash", annotation_text=f"IV layer {marked_layer}")
    fig.update_layout(title=title, xaxis_title="layer (output of block)", yaxis_title=y_title, height=450)
    return fig
