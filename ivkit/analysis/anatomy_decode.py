"""Decoding an instruction vector into the vocabulary.

* `decode_vector`: the tokens a vector promotes and suppresses, read through the model's
  final norm and unembedding (`ivkit.engine.continuation.final_logits`, with Gemma 2's
  soft-cap), as if it were the last residual stream. Also its *direct* logits, the unembedding
  alone (``W_U v``, linear in ``v``: the logits of a sum are the sum of the parts' before the norm).
* `logit_lens`: what the vector does at each layer of real prompts: it is added to the
  residual stream after block ``L`` at the last token of zero-shot prompts, and that stream is
  read through the final norm and unembedding directly (the blocks above ``L`` are skipped: a
  logit lens). Per layer: the tokens whose log-probability rises most on average, and the mean
  rise of the answer's first token. Unlike `decode_vector`, this depends on the layer (the
  norm sees the vector *plus* that layer's residual stream).
* `top_token_reconstruction`: how few top tokens carry the vector's effect. The vector is
  projected onto the span of the read-out directions of its top-``N`` decoded tokens (row ``t``
  of the unembedding times the final norm's gain: the direction that token's logit reads), and
  that projection alone is injected where the IV is; its zero-shot accuracy is swept over ``N``.

Gotcha: the final norm makes `decode_vector`'s logits independent of the vector's length
(an RMS norm divides it out), so two vectors of one direction decode the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..activations import residual_stream
from ..core.errors import InputError
from ..core.prompts import EncodedPrompts
from ..engine.continuation import final_logits
from ..evaluation import score_prompts
from ..models.model import IVModel
from ..vectors import InstructionVector
from .anatomy_common import accuracy_row


def _vec(model: IVModel, v: Tensor | InstructionVector) -> Tensor:
    v = v.vector if isinstance(v, InstructionVector) else v
    if v.dim() != 1 or v.shape[0] != model.geometry.d_model:
        raise InputError(f"expected a ({model.geometry.d_model},) vector for {model.name}, got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise InputError("the vector has non-finite entries")
    return v.detach().to(model.device, model.dtype)


def _token(model: IVModel, t: int) -> str:
    return model.tokenizer.decode([int(t)])


@torch.no_grad()
def direct_logits(model: IVModel, v: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows vocab"]:
    """The unembedding alone, ``W_U v`` (an output bias, if any, removed): linear in ``v``."""
    head = model.model.get_output_embeddings()
    v = v.to(model.device, model.dtype)
    return (head(v) - head(torch.zeros_like(v))).float()


@dataclass(frozen=True, eq=False)
class Decoding:
    """The tokens a vector promotes and suppresses (`decode_vector`).

    Attributes:
        promoted: ``[(token, logit), ...]``, highest first.
        suppressed: ``[(token, logit), ...]``, lowest first.
        logits: ``(vocab,)`` the vector read through the final norm and unembedding.
        direct: ``(vocab,)`` the unembedding alone (no norm): linear in the vector.
        name: what was decoded.
    """

    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    logits: Float[Tensor, " vocab"]
    direct: Float[Tensor, " vocab"]
    name: str = "vector"

    def to_pandas(self):
        import pandas as pd

        rows = [{"kind": "promoted", "rank": i + 1, "token": t, "logit": x} for i, (t, x) in enumerate(self.promoted)]
        rows += [{"kind": "suppressed", "rank": i + 1, "token": t, "logit": x}
                 for i, (t, x) in enumerate(self.suppressed)]
        return pd.DataFrame(rows)

    def plot(self, title: str | None = None):
        from ..core.plots import token_bars

        tokens = [t for t, _ in self.promoted] + [t for t, _ in self.suppressed][::-1]
        values = [x for _, x in self.promoted] + [x for _, x in self.suppressed][::-1]
        return token_bars(tokens, values, title=title or f"{self.name}: tokens promoted and suppressed "
                                                         f"(final norm + unembedding)", value_title="logit")

    def __repr__(self) -> str:
        up = " ".join(repr(t) for t, _ in self.promoted[:8])
        down = " ".join(repr(t) for t, _ in self.suppressed[:5])
        return f"Decoding({self.name!r}: promotes {up}; suppresses {down})"


@torch.no_grad()
def decode_vector(model: IVModel, vector: Float[Tensor, " d_model"] | InstructionVector, *, top: int = 10,
                  name: str | None = None) -> Decoding:
    """The ``top`` tokens ``vector`` promotes and suppresses through the final norm and unembedding."""
    if top < 1:
        raise InputError(f"top must be at least 1, got {top}")
    v = _vec(model, vector)
    logits = final_logits(model, v[None])[0].cpu()
    up = torch.topk(logits, min(top, logits.numel()))
    down = torch.topk(-logits, min(top, logits.numel()))
    if name is None:
        name = str(vector.meta.get("task", "IV")) if isinstance(vector, InstructionVector) else "vector"
    return Decoding([(_token(model, i), float(x)) for i, x in zip(up.indices, up.values)],
                    [(_token(model, i), float(-x)) for i, x in zip(down.indices, down.values)],
                    logits, direct_logits(model, v).cpu(), name)


@dataclass(frozen=True)
class LogitLens:
    """Per layer, what adding the vector there does to the logit-lens reading of the last token.

    Attributes:
        layers: the layers read.
        tokens: ``[layer][rank]`` the tokens whose log-probability rises most (mean over prompts).
        gains: ``[layer][rank]`` their mean rise (nats).
        answer_gain: ``[layer]`` the mean rise of each prompt's answer token (nats).
        scale: the multiplier of the vector; n: prompts.
    """

    layers: list[int]
    tokens: list[list[str]]
    gains: list[list[float]]
    answer_gain: list[float]
    scale: float
    n: int
    name: str = "vector"

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([{"layer": l, "rank": r + 1, "token": t, "gain": g, "answer_gain": a}
                             for l, ts, gs, a in zip(self.layers, self.tokens, self.gains, self.answer_gain)
                             for r, (t, g) in enumerate(zip(ts, gs))])

    def plot(self, title: str | None = None):
        from ..core.plots import token_grid

        return token_grid(self.gains, self.tokens, rows=[f"layer {l}" for l in self.layers],
                          title=title or f"{self.name} added after each layer (x{self.scale:g}), logit lens: "
                                         f"tokens whose log-prob rises most (n={self.n})", value_title="nats")

    def __repr__(self) -> str:
        best = max(range(len(self.layers)), key=lambda i: self.answer_gain[i]) if self.layers else None
        where = f"; answer gain peaks at layer {self.layers[best]} ({self.answer_gain[best]:+.2f} nats)" \
            if best is not None else ""
        return f"LogitLens({self.name!r}, {len(self.layers)} layers, n={self.n}{where})"


@torch.no_grad()
def logit_lens(model: IVModel, vector: Float[Tensor, " d_model"] | InstructionVector, prompts: EncodedPrompts, *,
               layers: Sequence[int] | None = None, scale: float | None = None, top: int = 5,
               batch_size: int = 16, name: str | None = None) -> LogitLens:
    """See the module docstring. ``scale`` defaults to an IV's own (1 for a plain vector)."""
    if len(prompts) == 0:
        raise InputError("logit_lens needs at least one prompt")
    iv = vector if isinstance(vector, InstructionVector) else None
    scale = float(iv.scale if iv is not None and scale is None else (1.0 if scale is None else scale))
    v = _vec(model, vector).float().cpu()
    layers = list(range(model.geometry.n_layers)) if layers is None else [int(x) for x in layers]
    for l in layers:
        if not 0 <= l < model.geometry.n_layers:
            raise InputError(f"layer {l} is out of range: {model.name} has layers 0..{model.geometry.n_layers - 1}")
    res = residual_stream(model, prompts, batch_size=batch_size)
    target = prompts.first_token
    tokens, gains, answer = [], [], []
    for l in layers:
        h = res[:, l].to(model.device, model.dtype)
        base = torch.log_softmax(final_logits(model, h), -1)
        steer = torch.log_softmax(final_logits(model, h + scale * v.to(model.device, model.dtype)), -1)
        delta = (steer - base).cpu()
        mean = delta.mean(0)
        best = torch.topk(mean, min(top, mean.numel()))
        tokens.append([_token(model, i) for i in best.indices])
        gains.append([float(x) for x in best.values])
        answer.append(float(delta[torch.arange(len(target)), target].mean()))
    if name is None:
        name = str(iv.meta.get("task", "IV")) if iv is not None else "vector"
    return LogitLens(layers, tokens, gains, answer, scale, len(prompts), name)


def _readout_gain(model: IVModel) -> Float[Tensor, " d_model"]:
    """The final norm's per-feature gain: its weight for a LayerNorm; for an RMS norm (Llama's
    ``w`` or Gemma's ``1 + w``), its output on a vector of ones (whose RMS is 1)."""
    norm = model.final_norm()
    if isinstance(norm, torch.nn.LayerNorm):
        return norm.weight.detach().float().cpu()
    ones = torch.ones(1, model.geometry.d_model, device=model.device, dtype=model.dtype)
    return norm(ones)[0].detach().float().cpu()


def readout_projection(model: IVModel, vector: Float[Tensor, " d_model"], tokens: Sequence[int]
                       ) -> Float[Tensor, " d_model"]:
    """``vector`` projected (least squares) onto the span of the read-out directions of
    ``tokens``: row ``t`` of the unembedding times the final norm's gain."""
    if not len(tokens):
        raise InputError("the projection needs at least one token")
    w = model.model.get_output_embeddings().weight.detach().float().cpu()[list(tokens)]
    u = (w * _readout_gain(model)[None]).double()                                      # (N, d)
    coef = torch.linalg.lstsq(u.T, vector.double().cpu()[:, None]).solution           # (N, 1)
    return (u.T @ coef)[:, 0].float()


@dataclass(frozen=True)
class Reconstruction:
    """Zero-shot accuracy with only the projection of the vector on its top-``N`` tokens injected.

    Attributes:
        rows: ``n_tokens`` (None for the whole vector, 0 for no vector), ``top1, lo, hi, n``, the
            projection's ``cosine`` with the vector and ``norm_ratio`` to it.
        layer, scale: where and how strongly every row was injected (the IV's own).
    """

    rows: list[dict[str, Any]]
    layer: int
    scale: float
    name: str = "IV"
    split: str = "test"
    info: dict[str, Any] = field(default_factory=dict)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, title: str | None = None):
        from ..core.plots import interval_lines

        df = self.to_pandas()
        part = df[df["n_tokens"].notna() & (df["n_tokens"] > 0)].assign(what="top-N projection")
        fig = interval_lines(part, x="n_tokens", y="top1", lo="lo", hi="hi", line="what", log_x=True,
                             x_title="top tokens N", y_title=f"zero-shot top-1 ({self.split})",
                             title=title or f"{self.name}: the vector's projection on its top-N tokens, injected "
                                            f"at layer {self.layer} x{self.scale:g}")
        for label, n_tokens, dash in (("whole vector", None, "dash"), ("no vector", 0, "dot")):
            hit = [r for r in self.rows if r["n_tokens"] == n_tokens]
            if hit:
                fig.add_hline(y=hit[0]["top1"], line_dash=dash, annotation_text=label)
        return fig

    def __repr__(self) -> str:
        cells = ", ".join(f"N={'all' if r['n_tokens'] is None else r['n_tokens']}: {r['top1']:.2f}" for r in self.rows)
        return f"Reconstruction({self.name!r} at layer {self.layer} x{self.scale:g}, {self.split}: {cells})"


@torch.no_grad()
def top_token_reconstruction(model: IVModel, iv: InstructionVector, prompts: EncodedPrompts, *,
                             n_tokens: Sequence[int] = (1, 5, 10, 20, 50, 100, 200, 400), layer: int | None = None,
                             scale: float | None = None, batch_size: int = 16, split: str = "test") -> Reconstruction:
    """See the module docstring: the IV's projection on the read-out directions of its top-``N``
    decoded tokens, injected at the IV's layer and scale (or the given ones), for each ``N``;
    beside it the whole vector and no vector, on the same ``prompts``."""
    if not n_tokens or any(int(n) < 1 for n in n_tokens):
        raise InputError(f"n_tokens must be whole numbers of at least 1, got {list(n_tokens)}")
    iv.check_compatible(model)
    layer = iv.layer if layer is None else layer
    if layer is None:
        raise InputError("the IV has no injection layer (heads injection or not swept): pass layer=...")
    scale = iv.scale if scale is None else float(scale)
    v = iv.vector.float().cpu()
    order = torch.argsort(final_logits(model, _vec(model, v)[None])[0].cpu(), descending=True)
    rows = [{"n_tokens": 0, **accuracy_row(score_prompts(model, prompts, batch_size=batch_size).ranks),
             "cosine": 0.0, "norm_ratio": 0.0}]
    for n in sorted({int(x) for x in n_tokens}):
        p = readout_projection(model, v, order[:n].tolist())
        s = score_prompts(model, prompts, vector=p, layer=layer, scale=scale, batch_size=batch_size)
        rows.append({"n_tokens": n, **accuracy_row(s.ranks),
                     "cosine": float(torch.nn.functional.cosine_similarity(p, v, dim=0)),
                     "norm_ratio": float(p.norm() / v.norm())})
    s = score_prompts(model, prompts, vector=v, layer=layer, scale=scale, batch_size=batch_size)
    rows.append({"n_tokens": None, **accuracy_row(s.ranks), "cosine": 1.0, "norm_ratio": 1.0})
    return Reconstruction(rows, int(layer), float(scale), str(iv.meta.get("task", "IV")), split)
