"""The exact continuation engine: re-run the last positions of a batch from any layer up, over the
cached prefix.

Why it is exact
---------------
Changing anything at the last ``S`` positions of a prompt (patching a head's output there, adding
a vector to the residual stream there) changes nothing at earlier positions: attention is causal.
So the changed run equals the plain run everywhere except at those ``S`` positions, and there
only from the changed layer upward. Those positions attend over the plain run's keys and values
for every earlier position, which do not change.

How it runs
-----------
1. `run_prefix`: one full forward pass over ``P`` prompts keeps each layer's keys/values
   (a ``DynamicCache``), the input of every decoder block at the last ``S`` positions, and the
   arguments each block received (bound by `ivkit.engine.blockcall`, the one place that
   knows how a block is called);
2. `continue_rows`: *rows* (hidden states ``(P, r, S, d_model)``, grouped by the layer
   they enter at, optionally with heads to patch there) go up the layers through the model's own
   decoder blocks. Attention inside a block is computed by `_prefix_attention`: each
   prompt's cached prefix keys/values are shared by all of its rows (one batched matmul per
   prompt, no copies), and each row also attends to its own new positions; the two parts are
   combined in one softmax;
3. `read_rows`: the final norm and unembedding, a chunk of rows at a time, and a reading of
   each row's logits (a metric, a rank).

Its two users are the fast indirect effects (`ivkit.mediation.fast`: one row per head) and
the fast layer sweep (`ivkit.evaluation.sweep`: one row per layer and scale). Both add an
unchanged *guard row* per prompt and compare it with the full pass (`check_guard`).

Safety
------
Anything the engine cannot re-run (an attention implementation other than sdpa/eager, a block
argument it cannot re-make per row, a guard row that disagrees) raises
`FastPathUnsupported`, an explicit capability check; the caller
then falls back to the naive path and records that it did. Any other exception is a bug and
propagates.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..models.backends.torch_backend import attach_hf_hooks
from ..models.hooks import HeadPatch
from ..models.model import Batch, IVModel
from .blockcall import FastPathUnsupported, bind_block_call, cache_argument, check_remakeable, remake_block_kwargs

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
    they are; `_prefix_attention` adds the shared prefix itself."""

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
    P = kp.shape[0]
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


def final_logits(model: IVModel, hidden: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows vocab"]:
    """The final norm, the unembedding and (Gemma 2) the final logit soft-cap, as the model applies
    them after its last block: float32 logits."""
    logits = model.model.get_output_embeddings()(model.final_norm()(hidden)).float()
    cap = getattr(model.model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def fast_unavailable(model: IVModel) -> str | None:
    """Why the engine cannot run on this model's backend at all (it needs the Hugging Face modules
    on this machine, unwrapped), or None when it can."""
    return None if model.backend.supports_fast else (model.backend.fast_blocker or
                                                     "it only runs interventions through its own hooks")


def check_supported(model: IVModel) -> None:
    """Raise `FastPathUnsupported` if the attention cannot be swapped for the prefix one."""
    impl = getattr(model.model.config, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        raise FastPathUnsupported(f"attention implementation {impl!r} (the fast path replaces sdpa or eager)")


def prompts_per_pass(model: IVModel, max_len: int, s: int, max_memory_mb: float) -> int:
    """How many prompts fit one continuation pass in ``max_memory_mb``: a rough model of the
    largest per-prompt temporaries (rows' hidden states, MLP activations, attention scores)."""
    g = model.geometry
    rows = g.n_total_heads + 1
    mlp = int(getattr(model.model.config, "intermediate_size", 4 * g.d_model))
    per_row = s * (6 * g.d_model + 3 * mlp + 4 * g.n_heads * g.d_head + 3 * g.n_heads * max_len) * 4
    return max(1, int(max_memory_mb * 2**20 // (rows * per_row)))


@dataclass(frozen=True, eq=False)
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
    batch: Batch
    s: int
    block_in: dict[int, Float[Tensor, "P s d_model"]]
    block_kwargs: dict[int, dict[str, Any]]
    ctx: _Continuation
    logits: Float[Tensor, "P s vocab"]

    @property
    def n_prompts(self) -> int:
        return int(self.batch.input_ids.shape[0])


@dataclass(frozen=True, eq=False)
class RowGroup:
    """Rows that enter the network at the input of block ``layer`` (``n_layers``: after the last
    block) with hidden states ``hidden`` ``(P, r, s, d_model)``. ``patch_mask`` ``(P, r, n_heads)``
    and ``patch_values`` ``(n_heads, d_head)`` replace head outputs inside that block, at position
    ``patch_pos`` ``(P,)`` of the ``s`` re-run ones."""

    layer: int
    hidden: Float[Tensor, "P r s d_model"]
    patch_mask: Bool[Tensor, "P r n_heads"] | None = None
    patch_values: Float[Tensor, "n_heads d_head"] | None = None
    patch_pos: Int[Tensor, " P"] | None = None


@torch.inference_mode()
def run_prefix(model: IVModel, sequences: list[list[int]], s: int) -> PrefixRun:
    """One full pass over ``sequences`` keeping what continuations need (see `PrefixRun`)."""
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
def continue_rows(run: PrefixRun, groups: list[RowGroup]) -> list[Float[Tensor, "P r s d_model"]]:
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


def read_rows(model: IVModel, hidden: Float[Tensor, "R s d_model"],
              read: Callable[[Float[Tensor, "r s vocab"], slice], Tensor], logits_rows: int = 512) -> Tensor:
    """Unembed ``hidden`` (`final_logits`) ``logits_rows`` rows at a time and apply
    ``read(logits, rows)`` to each chunk (``rows``: the chunk's slice of ``hidden``); returns the
    reads ``(R, ...)`` as float32 on the CPU."""
    out: Tensor | None = None
    for a in range(0, hidden.shape[0], logits_rows):
        sl = slice(a, a + logits_rows)
        val = read(final_logits(model, hidden[sl]), sl).float().cpu()
        if out is None:
            out = torch.empty((hidden.shape[0], *val.shape[1:]))
        out[sl] = val
    assert out is not None, "read_rows got no rows"
    return out


def check_guard(got: Tensor, want: Tensor, tol: float, what: str) -> None:
    """The guard rows (unchanged, continued from the bottom) must reproduce the full pass: raise
    `FastPathUnsupported` when they differ by more than ``tol``."""
    err = (got - want).abs().max().item()
    if not err <= tol:
        raise FastPathUnsupported(f"the {what} continuation differs from the full pass by {err:.2e} "
                                  f"(tolerance {tol:.0e})")
