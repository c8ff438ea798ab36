"""Plotly figures for notebooks and HTML reports. Every function returns a ``plotly`` Figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .evaluate import Evaluation, LayerSweep
    from .mediation import IndirectEffects


def plot_head_importance(aie: "IndirectEffects | torch.Tensor", *, top_k: int = 10, title: str | None = None):
    """Heatmap of AIE, layers (rows) x heads (columns); the top ``k`` heads are circled and ranked.

    Args:
        aie: :class:`~ivkit.IndirectEffects` or a ``(n_layers, n_heads)`` tensor.
    """
    import plotly.graph_objects as go

    from .mediation import IndirectEffects

    ie = aie if isinstance(aie, IndirectEffects) else IndirectEffects(
        torch.as_tensor(aie), torch.as_tensor(aie)[None], torch.zeros(1), "given", "prob", 0.0)
    z = ie.aie.float().numpy()
    n_layers, n_heads = z.shape
    lim = float(abs(z).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n_heads)), y=list(range(n_layers)), colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
        colorbar={"title": "AIE"},
        hovertemplate="layer %{y}, head %{x}<br>AIE %{z:.4g}<extra></extra>",
    ))
    top = ie.top_heads(top_k)
    if top:
        fig.add_trace(go.Scatter(
            x=[h for _, h, _ in top], y=[l for l, _, _ in top], mode="markers+text",
            marker={"symbol": "circle-open", "size": 16, "color": "black", "line": {"width": 2}},
            text=[str(i + 1) for i in range(len(top))], textposition="middle right",
            name=f"top {top_k}",
            hovertemplate="rank %{text}: layer %{y}, head %{x}<extra></extra>",
        ))
    metric = {"prob": "P(answer)", "logit": "answer logit", "nll": "-ΔNLL"}.get(ie.metric, ie.metric)
    fig.update_layout(
        title=title or f"Average indirect effect per head ({metric}, {ie.method}, {ie.per_trial.shape[0]} trials)",
        xaxis_title="head", yaxis_title="layer", xaxis={"dtick": 1}, yaxis={"autorange": True},
        height=max(400, 18 * n_layers + 150), width=max(500, 40 * n_heads + 250), showlegend=False,
    )
    return fig


def plot_layer_sweep(sweep: "LayerSweep", *, title: str | None = None):
    """Top-1 accuracy against the injection layer, one line per scale; the chosen cell marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for si, sc in enumerate(sweep.scales):
        fig.add_trace(go.Scatter(
            x=sweep.layers, y=sweep.top1[si], mode="lines+markers", name=f"top-1, scale {sc:g}",
            customdata=sweep.mean_prob[si],
            hovertemplate="layer %{x}: top-1 %{y:.3f}, mean P(answer) %{customdata:.3f}<extra></extra>"))
    fig.add_hline(y=sweep.baseline_top1, line_dash="dash", annotation_text="no vector")
    fig.add_trace(go.Scatter(x=[sweep.best_layer], y=[sweep.best_top1], mode="markers", name="chosen",
                             marker={"symbol": "star", "size": 16, "color": "green"}))
    fig.update_layout(title=title or f"Injection sweep ({sweep.split} split, n={sweep.n}): best layer "
                                     f"{sweep.best_layer}, scale {sweep.best_scale:g}",
                      xaxis_title="layer the vector is added after", yaxis_title="top-1 accuracy",
                      yaxis={"range": [0, 1.02]})
    return fig


def plot_evaluation(ev: "Evaluation", *, title: str | None = None):
    """Bars of top-1/2/3 accuracy per condition."""
    import plotly.graph_objects as go

    conds = list(ev.results)
    fig = go.Figure([go.Bar(name=f"top-{k}", x=conds, y=[ev.results[c][f"top{k}"] for c in conds])
                     for k in (1, 2, 3)])
    fig.update_layout(barmode="group", yaxis={"range": [0, 1]}, yaxis_title="accuracy",
                      title=title or f"{ev.info.get('task', '')}: IV at layer {ev.layer}, n={ev.n}")
    return fig


def to_html(fig: Any, path: "str | Path") -> None:
    """Write a figure as a self-contained HTML file, atomically."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), fig.to_html(include_plotlyjs=True, full_html=True))
