"""Plotly figures for notebooks and HTML reports. Every function returns a ``plotly`` Figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .evaluate import Evaluation, LayerSweep
    from .mediation import IndirectEffects


def plot_head_importance(aie: "IndirectEffects | torch.Tensor", *, top_k: int = 10, title: str | None = None,
                         heads: "list[tuple[int, int]] | None" = None):
    """Heatmap of AIE, layers (rows) x heads (columns); the top ``k`` heads are circled and ranked.

    Args:
        aie: :class:`~ivkit.IndirectEffects` or a ``(n_layers, n_heads)`` tensor.
        heads: circle these ``(layer, head)`` pairs instead, numbered in the order given (an
            IV's heads when they are not the top k, e.g. chosen greedily).
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
    top = ie.top_heads(top_k) if heads is None else [(int(l), int(h), float(z[l, h])) for l, h in heads]
    if top:
        fig.add_trace(go.Scatter(
            x=[h for _, h, _ in top], y=[l for l, _, _ in top], mode="markers+text",
            marker={"symbol": "circle-open", "size": 16, "color": "black", "line": {"width": 2}},
            text=[str(i + 1) for i in range(len(top))], textposition="middle right",
            name=f"top {top_k}" if heads is None else "chosen heads",
            hovertemplate=("rank" if heads is None else "step") + " %{text}: layer %{y}, head %{x}<extra></extra>",
        ))
    metric = {"prob": "P(answer)", "logit": "answer logit", "nll": "-ΔNLL"}.get(ie.metric, ie.metric)
    fig.update_layout(
        title=title or f"Average indirect effect per head ({metric}, {ie.method}, {ie.per_trial.shape[0]} trials)",
        xaxis_title="head", yaxis_title="layer", xaxis={"dtick": 1}, yaxis={"autorange": True},
        height=max(400, 18 * n_layers + 150), width=max(500, 40 * n_heads + 250), showlegend=False,
    )
    return fig


def plot_layer_sweep(sweep: "LayerSweep", *, title: str | None = None):
    """Top-1 accuracy against the injection layer, one line per scale; the heads injection (when
    swept) as one point per scale in a column labelled "heads" after the last layer; the chosen
    cell marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for si, sc in enumerate(sweep.scales):
        fig.add_trace(go.Scatter(
            x=sweep.layers, y=sweep.top1[si], mode="lines+markers", name=f"top-1, scale {sc:g}",
            customdata=sweep.mean_prob[si],
            hovertemplate="layer %{x}: top-1 %{y:.3f}, mean P(answer) %{customdata:.3f}<extra></extra>"))
    heads_x = (max(sweep.layers) + 2) if sweep.layers else 0
    if sweep.heads_top1 is not None:
        fig.add_trace(go.Scatter(
            x=[heads_x] * len(sweep.scales), y=sweep.heads_top1, mode="markers+text", name="heads injection",
            text=[f"x{sc:g}" for sc in sweep.scales], textposition="middle right",
            customdata=list(zip(sweep.scales, sweep.heads_prob)),
            hovertemplate="heads, scale %{customdata[0]}: top-1 %{y:.3f}, mean P(answer) %{customdata[1]:.3f}"
                          "<extra></extra>"))
        ticks = list(sweep.layers[::max(1, len(sweep.layers) // 10)]) + [heads_x]
        fig.update_xaxes(tickvals=ticks, ticktext=[str(t) for t in ticks[:-1]] + ["heads"])
    fig.add_hline(y=sweep.baseline_top1, line_dash="dash", annotation_text="no vector")
    best = sweep.best()
    fig.add_trace(go.Scatter(x=[heads_x if best["layer"] is None else best["layer"]], y=[best["top1"]],
                             mode="markers", name="chosen", marker={"symbol": "star", "size": 16, "color": "green"}))
    where = "heads injection" if best["layer"] is None else f"best layer {best['layer']}"
    fig.update_layout(title=title or f"Injection sweep ({sweep.split} split, n={sweep.n}): {where}, "
                                     f"scale {best['scale']:g}",
                      xaxis_title="layer the vector is added after", yaxis_title="top-1 accuracy",
                      yaxis={"range": [0, 1.02]})
    return fig


def plot_evaluation(ev: "Evaluation", *, title: str | None = None):
    """Bars of top-1/2/3 accuracy per condition; the top-1 bars carry their 95% Wilson interval
    as error bars (when the results have one)."""
    import plotly.graph_objects as go

    conds = list(ev.results)
    fig = go.Figure([go.Bar(name=f"top-{k}", x=conds, y=[ev.results[c][f"top{k}"] for c in conds])
                     for k in (1, 2, 3)])
    r = [ev.results[c] for c in conds]
    if all(x.get("top1_lo") is not None and x.get("top1_hi") is not None for x in r):
        fig.data[0].error_y = dict(type="data", array=[x["top1_hi"] - x["top1"] for x in r],
                                   arrayminus=[x["top1"] - x["top1_lo"] for x in r], visible=True)
    fig.update_layout(barmode="group", yaxis={"range": [0, 1]}, yaxis_title="accuracy",
                      title=title or f"{ev.info.get('task', '')}: IV at layer {ev.layer}, n={ev.n}")
    return fig


def to_html(fig: Any, path: "str | Path", *, self_contained: bool = True) -> None:
    """Write a figure as an HTML file, atomically: self-contained (works offline, ~4 MB) or
    loading plotly.js from its CDN (small; for committed docs)."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), fig.to_html(include_plotlyjs=True if self_contained else "cdn", full_html=True))


def plot_tracking(tracking: Any):
    """IV similarity and accuracy over checkpoints, one line per task (two stacked panels)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df = tracking.to_pandas()
    labels = list(dict.fromkeys(df["checkpoint"]))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("IV cosine to the first checkpoint's", "accuracy (test, top-1)"))
    dashes = {"zero_shot": "dot", "few_shot": "solid", "zero_shot_iv": "dash"}
    for task, sub in df.groupby("task", sort=False):
        fig.add_trace(go.Scatter(x=sub["checkpoint"], y=sub["iv_cosine"], mode="lines+markers", name=f"{task}: IV cosine",
                                 legendgroup=task), row=1, col=1)
        for col, dash in dashes.items():
            fig.add_trace(go.Scatter(x=sub["checkpoint"], y=sub[col], mode="lines+markers", line={"dash": dash},
                                     name=f"{task}: {col.replace('_', ' ')}", legendgroup=task), row=2, col=1)
    fig.update_xaxes(categoryorder="array", categoryarray=labels)
    fig.update_yaxes(range=[-0.05, 1.05], row=2, col=1)
    fig.update_layout(height=700, title=f"Instruction vectors across checkpoints ({tracking.mode} heads)")
    return fig


def plot_alignment(tracking: Any, task: str):
    """Layer profile of the cosine between the last-token residual stream and the reference IV,
    one line per checkpoint, for zero-shot (dotted) and few-shot (solid) prompts."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in [r for r in tracking.records if r["task"] == task]:
        for style, dash in (("zero_shot", "dot"), ("few_shot", "solid")):
            ys = r[f"alignment_{style}"]
            fig.add_trace(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines", line={"dash": dash},
                                     name=f"{r['checkpoint']} ({style.replace('_', '-')})", legendgroup=r["checkpoint"]))
    fig.update_layout(title=f"{task}: cos(residual stream at the last token, reference IV)",
                      xaxis_title="layer (block output)", yaxis_title="cosine")
    return fig


def plot_heads_over_checkpoints(tracking: Any, task: str):
    """AIE heatmap per checkpoint with a slider over checkpoints (``mode="rerank"`` only)."""
    import plotly.graph_objects as go

    recs = [r for r in tracking.records if r["task"] == task and r.get("aie") is not None]
    if not recs:
        from .errors import InputError

        raise InputError("per-checkpoint AIE exists only in mode='rerank'")
    lim = max(abs(v) for r in recs for row in r["aie"] for v in row) or 1.0
    fig = go.Figure()
    for i, r in enumerate(recs):
        fig.add_trace(go.Heatmap(z=r["aie"], colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, visible=i == 0,
                                 name=r["checkpoint"],
                                 hovertemplate="layer %{y}, head %{x}<br>AIE %{z:.4g}<extra></extra>"))
    steps = [{"method": "update", "label": r["checkpoint"],
              "args": [{"visible": [j == i for j in range(len(recs))]}, {"title": f"{task}: AIE at {r['checkpoint']}"}]}
             for i, r in enumerate(recs)]
    fig.update_layout(sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "checkpoint: "}}],
                      title=f"{task}: AIE at {recs[0]['checkpoint']}", xaxis_title="head", yaxis_title="layer")
    return fig
