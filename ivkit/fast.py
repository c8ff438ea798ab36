"""Exact indirect effects near the FLOP limit (``method="fast"``).

Why it is exact
---------------
Patching a head's output at the last prompt position changes nothing at earlier positions
(attention is causal). So a patched run equals the corrupted run everywhere except at the last
``S`` positions (``S = 1`` for the ``prob`` metric; the answer's tokens too for ``nll``), and
there only from the patched layer upward. Those positions attend over the corrupted run's keys
and values for every earlier position, which do not change.

How it runs
-----------
For a chunk of ``P`` corrupted prompts:

1. one full forward pass keeps each layer's keys/values (a ``DynamicCache``), the input of every
   decoder block at the last ``S`` positions, and the keyword arguments each block received;
2. a *row* is one (prompt, layer, head) to patch, plus one unpatched *guard row* per prompt;
   hidden states are kept as ``(P, rows_per_prompt, S, d_model)``;
3. going up the layers, the ``n_heads`` rows of layer ``l`` join at layer ``l`` with the
   corrupted residual stream as input, and every active row runs through the model's own decoder
   block on its ``S`` positions. Attention inside the block is computed by
   :func:`_prefix_attention`: each prompt's cached prefix keys/values are shared by all of its
   rows (one batched matmul per prompt, no copies), and each row also attends to its own new
   positions; the two parts are combined in one softmax. The head is patched at its layer by the
   same pre-hook as the naive path;
4. the final norm and unembedding give each row's metric.

Cost per (prompt, head) is about ``S`` token-steps of the layers from the head's layer up,
instead of a full pass over ``T`` tokens; all heads and several prompts share every matmul.

Safety
------
The guard row of each prompt goes through the whole continuation unpatched and must reproduce
the full pass's metric (within ``guard_tol``). If it does not, or the model has anything this
path cannot re-run (an attention module that does not go through transformers' attention
interface, positional block arguments, ...), ivkit logs the reason and computes the naive path
instead: never a wrong answer.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from einops import rearrange

from .backends.torch_backend import attach_hf_hooks
from .blockcall import (FastPathUnsupported, bind_block_call, cache_argument, check_remakeable,
                        remake_block_kwargs)
from .hooks import HeadPatch
from .io import progress_bar
from .models import IVModel, _get_module

log = logging.getLogger(__name__)

ATTN_KEY = "ivkit_prefix"


@dataclass
class _Continuation:
    """Everything the prefix attention needs; passed to the blocks in place of the attention mask.

    Attributes:
        prefix: layer -> (keys, values), each ``(P, kv_heads, Tp, d_head)``: the corrupted run's
            cache for the positions before the last ``S``.
        key_ok: ``(P, Tp)`` bool, real (non-padding) prefix positions.
        n: rows per prompt at the current layer.
        s: positions re-run per row.
    """

    prefix: dict[int, tuple[torch.Tensor, torch.Tensor]]
    key_ok: torch.Tensor
    n: int = 0
    s: int = 1
    _bias: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def biases(self, window: int | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive masks: prefix ``(P, S, Tp)`` and own positions ``(S, S)``."""
        key = (window, dtype)
        if key not in self._bias:
            tp = self.key_ok.shape[1]
            q = torch.arange(tp, tp + self.s, device=self.key_ok.device)[:, None]       # absolute query positions
            kp = torch.arange(tp, device=self.key_ok.device)[None, :]
            ko = torch.arange(tp, tp + self.s, device=self.key_ok.device)[None, :]
            ok_p = self.key_ok[:, None, :].expand(-1, self.s, -1)
            ok_o = ko <= q
            if window is not None:
                ok_p = ok_p & (q - kp < window)[None]
                ok_o = ok_o & (q - ko < window)
            neg = torch.finfo(dtype).min
            self._bias[key] = (torch.zeros(ok_p.shape, dtype=dtype, device=ok_p.device).masked_fill_(~ok_p, neg),
                               torch.zeros(ok_o.shape, dtype=dtype, device=ok_o.device).masked_fill_(~ok_o, neg))
        return self._bias[key]


class _OwnKeysCache:
    """Stands in for a KV cache during the continuation: a row's new keys/values are returned as
    they are; :func:`_prefix_attention` adds the shared prefix itself."""

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    @property
    def is_compileable(self) -> bool:
        return False


def _prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                      sliding_window=None, **kwargs):
    """Attention of each row's ``S`` queries over its prompt's shared prefix plus its own keys.

    Shapes: ``query (R, n_heads, S, d)``, ``key``/``value`` ``(R, kv_heads, S, d)`` with
    ``R = P * n``. Returns ``(R, S, n_heads, d)``, as transformers' attention functions do.
    """
    ctx = attention_mask
    if not isinstance(ctx, _Continuation):
        raise FastPathUnsupported("an attention module was called outside the continuation")
    layer = getattr(module, "layer_idx", None)
    if layer not in ctx.prefix:
        raise FastPathUnsupported(f"{type(module).__name__} has no usable layer_idx")
    kp, vp = ctx.prefix[layer]
    P, n = kp.shape[0], ctx.n
    kvh = kp.shape[1]
    d = query.shape[-1]
    scaling = d ** -0.5 if scaling is None else scaling
    window = sliding_window if sliding_window is not None else getattr(module, "sliding_window", None)
    q = rearrange(query, "(p n) (k g) s d -> p n k g s d", p=P, k=kvh)
    ko = rearrange(key, "(p n) k s d -> p n k s d", p=P)
    vo = rearrange(value, "(p n) k s d -> p n k s d", p=P)
    sp = torch.einsum("pnkgsd,pktd->pnkgst", q, kp) * scaling       # scores over the shared prefix
    so = torch.einsum("pnkgsd,pnkud->pnkgsu", q, ko) * scaling      # scores over the row's own positions
    if softcap:
        sp = torch.tanh(sp / softcap) * softcap
        so = torch.tanh(so / softcap) * softcap
    bias_p, bias_o = ctx.biases(window, sp.dtype)
    sp = sp + bias_p[:, None, None, None]
    so = so + bias_o
    m = torch.maximum(sp.amax(-1, keepdim=True), so.amax(-1, keepdim=True))
    ep, eo = torch.exp(sp - m), torch.exp(so - m)
    denom = ep.sum(-1, keepdim=True) + eo.sum(-1, keepdim=True)
    out = (torch.einsum("pnkgst,pktd->pnkgsd", ep, vp) + torch.einsum("pnkgsu,pnkud->pnkgsd", eo, vo)) / denom
    return rearrange(out, "p n k g s d -> (p n) s (k g) d").contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_KEY, _prefix_attention)


@contextmanager
def _attention_implementation(model: IVModel, key: str) -> Iterator[None]:
    # Register again on every use: another copy of this module (nnsight's remote="local" dry run
    # re-executes local modules by value) may have registered its own function under the key.
    _register_attention()
    cfg = model.model.config
    old = cfg._attn_implementation
    cfg._attn_implementation = key
    try:
        yield
    finally:
        cfg._attn_implementation = old


def _cache_kv(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]  # older transformers


def _final_logits(model: IVModel, hidden: torch.Tensor) -> torch.Tensor:
    norm = _get_module(model.model, model.spec.final_norm)
    logits = model.model.get_output_embeddings()(norm(hidden)).float()
    cap = getattr(model.model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _metrics(logits: torch.Tensor, prompt_of_row: torch.Tensor, items, metric: str, s: int,
             first: torch.Tensor) -> torch.Tensor:
    """Metric of each row from its logits ``(R, s, vocab)``."""
    if metric == "prob":
        return torch.softmax(logits[:, -1], -1).gather(-1, first.index_select(0, prompt_of_row)[:, None])[:, 0]
    if metric == "logit":
        return logits[:, -1].gather(-1, first.index_select(0, prompt_of_row)[:, None])[:, 0]
    logp = torch.log_softmax(logits, -1)
    out = torch.empty(len(prompt_of_row), device=logits.device)
    for p in prompt_of_row.unique().tolist():
        rows = (prompt_of_row == p).nonzero()[:, 0]
        ans = items[p].answer_ids
        start = s - len(ans) - 1
        tgt = torch.tensor(ans, device=logits.device)
        out[rows] = logp[rows, start:start + len(ans)].gather(-1, tgt[None, :, None].expand(len(rows), -1, 1)).sum((1, 2))
    return out


def check_supported(model: IVModel) -> None:
    """Raise :class:`FastPathUnsupported` if the attention cannot be swapped for the prefix one."""
    impl = getattr(model.model.config, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        raise FastPathUnsupported(f"attention implementation {impl!r} (the fast path replaces sdpa or eager)")


def _suffix(items, metric: str) -> int:
    """Positions each row re-runs: the last one, or the last prompt token and the answer."""
    from .mediation import FIRST_TOKEN_METRICS

    return 1 if metric in FIRST_TOKEN_METRICS else max(len(it.ids) - it.position for it in items)


def _prompts_per_pass(model: IVModel, max_len: int, s: int, max_memory_mb: float) -> int:
    """How many prompts fit one continuation pass in ``max_memory_mb``: a rough model of the
    largest per-prompt temporaries (rows' hidden states, MLP activations, attention scores)."""
    g = model.geometry
    rows = g.n_total_heads + 1
    mlp = int(getattr(model.model.config, "intermediate_size", 4 * g.d_model))
    per_row = s * (6 * g.d_model + 3 * mlp + 4 * g.n_heads * g.d_head + 3 * g.n_heads * max_len) * 4
    return max(1, int(max_memory_mb * 2**20 // (rows * per_row)))


@dataclass
class PrefixRun:
    """A full forward pass over a batch, kept so that rows can be continued from any layer.

    Attributes:
        batch: the left-padded batch.
        s: number of last positions the continuation re-runs.
        block_in: layer -> ``(P, s, d_model)`` input of each block at the last ``s`` positions;
            ``block_in[n_layers]`` is the last block's output (the final norm's input).
        block_kwargs: layer -> the keyword arguments each block received.
        ctx: the shared-prefix attention state (prefix keys/values, padding).
        logits: ``(P, s, vocab)`` the full pass's logits at the last ``s`` positions.
    """

    model: IVModel
    batch: Any
    s: int
    block_in: dict[int, torch.Tensor]
    block_kwargs: dict[int, dict[str, Any]]
    ctx: _Continuation
    logits: torch.Tensor

    @property
    def n_prompts(self) -> int:
        return int(self.batch.input_ids.shape[0])


@dataclass
class RowGroup:
    """Rows that enter the network at the input of block ``layer`` (``n_layers``: after the last
    block) with hidden states ``hidden`` ``(P, r, s, d_model)``. ``patch_mask`` ``(P, r, n_heads)``
    and ``patch_values`` ``(n_heads, d_head)`` replace head outputs inside that block, at position
    ``patch_pos`` ``(P,)`` of the ``s`` re-run ones."""

    layer: int
    hidden: torch.Tensor
    patch_mask: torch.Tensor | None = None
    patch_values: torch.Tensor | None = None
    patch_pos: torch.Tensor | None = None


@torch.inference_mode()
def run_prefix(model: IVModel, sequences: list[list[int]], s: int) -> PrefixRun:
    """One full pass over ``sequences`` keeping what continuations need (see :class:`PrefixRun`)."""
    from transformers import DynamicCache

    check_supported(model)
    g = model.geometry
    batch = model.make_batch(sequences)
    T = batch.input_ids.shape[1]
    if s >= min(len(x) for x in sequences):
        raise FastPathUnsupported("a re-run suffix as long as its whole sequence")
    block_in: dict[int, torch.Tensor] = {}
    block_kwargs: dict[int, dict[str, Any]] = {}

    def pre_hook(layer: int):
        def hook(module, args, kwargs):
            h, named = bind_block_call(module, args, kwargs)
            block_in[layer] = h[:, T - s:].clone()
            block_kwargs[layer] = named
        return hook

    def last_hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        block_in[g.n_layers] = h[:, T - s:].clone()

    cache = DynamicCache()
    cache_kw = {cache_argument(model.model): cache}
    handles = [model.block(l).register_forward_pre_hook(pre_hook(l), with_kwargs=True) for l in range(g.n_layers)]
    handles.append(model.block(g.n_layers - 1).register_forward_hook(last_hook))
    try:
        out = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids, use_cache=True, logits_to_keep=s, **cache_kw)
    finally:
        for h in handles:
            h.remove()
    for kw in block_kwargs.values():
        check_remakeable(kw, T)
    prefix = {}
    for l in range(g.n_layers):
        k, v = _cache_kv(cache, l)
        if k is None or k.shape[-2] != T:
            raise FastPathUnsupported("the KV cache does not hold every position")
        prefix[l] = (k[:, :, :T - s], v[:, :, :T - s])
    ctx = _Continuation(prefix, batch.attention_mask[:, :T - s].bool(), s=s)
    return PrefixRun(model, batch, s, block_in, block_kwargs, ctx, out.logits.float())


@torch.inference_mode()
def continue_rows(run: PrefixRun, groups: list[RowGroup]) -> list[torch.Tensor]:
    """Run every group's rows from its layer to the top, over the cached prefix.

    Returns, per group, the final hidden states (the final norm's input) ``(P, r, s, d_model)``.
    """
    model, s = run.model, run.s
    g = model.geometry
    H, P, T = g.n_heads, run.n_prompts, run.batch.input_ids.shape[1]
    dev = model.device
    order = sorted(range(len(groups)), key=lambda i: groups[i].layer)
    spans: dict[int, tuple[int, int]] = {}
    hidden = torch.empty(P, 0, s, g.d_model, device=dev, dtype=model.dtype)
    own = _OwnKeysCache()
    gi = 0
    with _attention_implementation(model, ATTN_KEY):
        for l in range(g.n_layers + 1):
            joining = []
            while gi < len(order) and groups[order[gi]].layer == l:
                joining.append(order[gi])
                gi += 1
            patch_mask = None
            patch_values = None
            patch_pos = None
            for i in joining:
                grp = groups[i]
                spans[i] = (hidden.shape[1], hidden.shape[1] + grp.hidden.shape[1])
                hidden = torch.cat([hidden, grp.hidden.to(hidden.dtype)], dim=1)
            if l == g.n_layers:
                break
            patched = [i for i in joining if groups[i].patch_mask is not None]
            if patched:
                patch_mask = torch.zeros(P, hidden.shape[1], H, dtype=torch.bool, device=dev)
                for i in patched:
                    a, b = spans[i]
                    patch_mask[:, a:b] = groups[i].patch_mask
                    if patch_values is not None and not torch.equal(patch_values, groups[i].patch_values):
                        raise ValueError("row groups joining one layer must share their patch values")
                    patch_values = groups[i].patch_values
                    patch_pos = groups[i].patch_pos
            if hidden.shape[1] == 0:
                continue
            n = hidden.shape[1]
            run.ctx.n = n
            kw = remake_block_kwargs(run.block_kwargs[l], context=run.ctx, own_cache=own, s=s, seq_len=T, n=n)
            if patch_mask is not None:
                detach = attach_hf_hooks(model, HeadPatch(
                    l, patch_mask.flatten(0, 1), patch_values.to(hidden.dtype), g.n_heads, g.d_head,
                    positions=patch_pos.repeat_interleave(n)))
                try:
                    res = model.block(l)(hidden.flatten(0, 1), **kw)
                finally:
                    detach()
            else:
                res = model.block(l)(hidden.flatten(0, 1), **kw)
            hidden = (res[0] if isinstance(res, tuple) else res).view(P, n, s, g.d_model)
    return [hidden[:, spans[i][0]:spans[i][1]] for i in range(len(groups))]


def logits_rows_for(model: IVModel, s: int, max_memory_mb: float) -> int:
    """How many rows to unembed at once so that their logits and softmax temporaries (about three
    ``(rows, s, vocab)`` float32 tensors) take at most half of ``max_memory_mb``; at most 512."""
    vocab = int(model.model.get_output_embeddings().weight.shape[0])
    return max(1, min(512, int(max_memory_mb * 2**20 / 2 // (3 * 4 * s * vocab))))


def row_logits(model: IVModel, hidden: torch.Tensor, fn, logits_rows: int = 512) -> torch.Tensor:
    """Apply ``fn(logits (R, s, vocab), rows slice) -> (R,)`` to the unembedded rows of
    ``hidden`` ``(R, s, d_model)``, ``logits_rows`` at a time; returns ``(R,)`` on the CPU."""
    out = torch.empty(hidden.shape[0])
    for a in range(0, hidden.shape[0], logits_rows):
        sl = slice(a, a + logits_rows)
        out[sl] = fn(_final_logits(model, hidden[sl]), sl).float().cpu()
    return out


@torch.inference_mode()
def _fast_chunk(model: IVModel, items, mean_acts: torch.Tensor, metric: str, guard_tol: float,
                logits_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = model.geometry
    H, P = g.n_heads, len(items)
    dev = model.device
    s = _suffix(items, metric)
    run = run_prefix(model, [it.ids for it in items], s)
    first = torch.tensor([it.first_token for it in items], device=dev)
    all_prompts = torch.arange(P, device=dev)
    baseline = _metrics(run.logits, all_prompts, items, metric, s, first)
    patch_pos = torch.tensor([s - (len(it.ids) - it.position) for it in items], device=dev)
    eye = torch.eye(H, dtype=torch.bool, device=dev)[None].expand(P, H, H)
    groups = [RowGroup(0, run.block_in[0][:, None])]  # the guard row: unpatched, from the bottom
    groups += [RowGroup(l, run.block_in[l][:, None].expand(P, H, s, g.d_model), eye, mean_acts[l], patch_pos)
               for l in range(g.n_layers)]
    finals = continue_rows(run, groups)
    rows = torch.cat(finals, dim=1)                                       # (P, 1 + n_layers*H, s, d)
    prompt_of_row = all_prompts.repeat_interleave(rows.shape[1])
    metrics = row_logits(model, rows.flatten(0, 1),
                         lambda lg, sl: _metrics(lg, prompt_of_row[sl], items, metric, s, first),
                         logits_rows).view(P, -1)
    err = (metrics[:, 0] - baseline.cpu()).abs().max().item()
    if not err <= guard_tol:
        raise FastPathUnsupported(f"the unpatched continuation differs from the full pass by {err:.2e} "
                                  f"(tolerance {guard_tol:.0e})")
    effects = metrics[:, 1:].view(P, g.n_layers, H) - baseline.cpu()[:, None, None]
    return effects, baseline.cpu()


def fast_effects(model: IVModel, items, mean_acts: torch.Tensor, metric: str, progress: bool, *,
                 prompts_per_pass: int | None = None, max_memory_mb: float = 1024.0, guard_tol: float = 1e-4,
                 logits_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``method="fast"``: exact per-head effects via last-position continuation (see module doc).

    Args:
        prompts_per_pass: corrupted prompts per continuation; default: as many as fit in
            ``max_memory_mb``.
        max_memory_mb: rough cap on the working memory of one pass (the model excluded).
        guard_tol: largest allowed difference between the unpatched continuation and the full
            pass, in metric units.
        logits_rows: rows unembedded at a time (bounds the ``rows x vocab`` logits); default:
            as many as fit in half of ``max_memory_mb`` (:func:`logits_rows_for`).

    Returns:
        ``(per_trial (n, n_layers, n_heads), baseline (n,))``, as the naive path.

    Raises:
        FastPathUnsupported: the model has something the continuation cannot re-run (the
            dispatcher, :func:`ivkit.indirect_effects`, then falls back and records it).
    """
    g = model.geometry
    max_len = max(len(it.ids) for it in items)
    s = _suffix(items, metric)
    per_pass = prompts_per_pass or _prompts_per_pass(model, max_len, s, max_memory_mb)
    logits_rows = logits_rows or logits_rows_for(model, s, max_memory_mb)
    effects = torch.empty(len(items), g.n_layers, g.n_heads)
    baseline = torch.empty(len(items))
    order = sorted(range(len(items)), key=lambda i: len(items[i].ids))  # similar lengths: less padding
    bar = progress_bar(total=len(items), desc="indirect effects (fast)", progress=progress)
    for a in range(0, len(order), per_pass):
        idx = order[a:a + per_pass]
        effects[idx], baseline[idx] = _fast_chunk(model, [items[i] for i in idx], mean_acts, metric,
                                                  guard_tol, logits_rows)
        bar.update(len(idx))
    bar.close()
    return effects, baseline


_register_attention()
