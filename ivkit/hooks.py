"""Reading and patching per-head outputs, and adding vectors to the residual stream.

Hook points (shapes for a batch of ``B`` rows and ``T`` positions)
-------------------------------------------------------------------
========================  ==========================================  ==============================
what                      where                                       tensor
========================  ==========================================  ==============================
head outputs ``z``        *input* of the attention output projection  ``(B, T, n_heads * d_head)``,
                          (``self_attn.o_proj``, ``attn.c_proj``,      viewed as
                          ``attention.dense``)                        ``(B, T, n_heads, d_head)``
block output (residual)   output of decoder block ``L``               ``(B, T, d_model)``
========================  ==========================================  ==============================

Positions are either one int for every row (``-1``, the last token, the default: batches are
left-padded so the last token is always at ``-1``) or a ``(B,)`` tensor of indices.

Gotchas
-------
* Under transformers 5 a decoder block returns a tensor, older versions a tuple. The block hook
  here edits either; a hook that edits only tuples silently does nothing on transformers 5.
  ``tests/test_hooks.py`` checks that every hook changes the logits.
* During generation with a KV cache each step's input is the new token alone, so "position -1"
  is the prompt's last token on the first step and each new token after.
* All hooks are removed when their ``with`` block exits, even on error.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from einops import rearrange

from .models import IVModel

Positions = int | torch.Tensor


def _rows_and_positions(positions: Positions, batch: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(batch, device=device)
    if isinstance(positions, int):
        pos = torch.full((batch,), positions % length, device=device, dtype=torch.long)
    else:
        pos = positions.to(device=device, dtype=torch.long)
        if pos.shape != (batch,):
            raise ValueError(f"positions must be an int or a ({batch},) tensor, got shape {tuple(pos.shape)}")
    return rows, pos


class HeadRecord:
    """Head outputs captured by :func:`record_head_outputs`.

    ``z[layer]`` is ``(B, n_heads, d_head)`` at the requested positions of the last forward pass.
    """

    def __init__(self, n_heads: int, d_head: int):
        self.n_heads, self.d_head = n_heads, d_head
        self.z: dict[int, torch.Tensor] = {}

    def stack(self, layers: Sequence[int] | None = None) -> torch.Tensor:
        """Head outputs as one tensor ``(B, n_layers_recorded, n_heads, d_head)``."""
        layers = sorted(self.z) if layers is None else layers
        if not layers or any(layer not in self.z for layer in layers):
            raise RuntimeError("no head outputs were recorded: run a forward pass inside the with-block")
        return torch.stack([self.z[layer] for layer in layers], dim=1)


@contextmanager
def record_head_outputs(
    model: IVModel, *, layers: Sequence[int] | None = None, positions: Positions = -1, detach: bool = True
) -> Iterator[HeadRecord]:
    """Record each head's output (the attention projection's input) at ``positions``.

    Yields a :class:`HeadRecord`; after a forward pass ``record.stack()`` is
    ``(B, n_layers, n_heads, d_head)``.
    """
    g = model.geometry
    record = HeadRecord(g.n_heads, g.d_head)
    layers = range(g.n_layers) if layers is None else layers

    def make_hook(layer: int):
        def hook(module, args):
            x = args[0]
            rows, pos = _rows_and_positions(positions, x.shape[0], x.shape[1], x.device)
            z = rearrange(x[rows, pos], "b (h d) -> b h d", h=g.n_heads)
            record.z[layer] = z.detach().clone() if detach else z
        return hook

    handles = [model.attn_out_proj(layer).register_forward_pre_hook(make_hook(layer)) for layer in layers]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


@contextmanager
def patch_head_outputs(
    model: IVModel, patches: Mapping[int, tuple[torch.Tensor, torch.Tensor]], *, positions: Positions = -1
) -> Iterator[None]:
    """Replace chosen heads' outputs at ``positions`` before the output projection.

    Args:
        patches: ``layer -> (mask, values)``. ``mask`` is bool ``(B, n_heads)`` or ``(n_heads,)``
            (which heads of which row to replace); ``values`` is ``(B, n_heads, d_head)`` or
            ``(n_heads, d_head)`` (what to put there; unmasked entries are ignored).
        positions: see the module docstring.

    The projection then runs on the patched input, so the patch reaches the residual stream
    through ``W_O`` exactly as a real head output would.
    """
    g = model.geometry

    def make_hook(mask: torch.Tensor, values: torch.Tensor):
        def hook(module, args):
            x = args[0]
            rows, pos = _rows_and_positions(positions, x.shape[0], x.shape[1], x.device)
            z = rearrange(x[rows, pos], "b (h d) -> b h d", h=g.n_heads)
            m = mask.to(x.device).expand(x.shape[0], g.n_heads)
            v = values.to(device=x.device, dtype=x.dtype).expand(x.shape[0], g.n_heads, g.d_head)
            new = torch.where(m[..., None], v, z)
            x = x.clone()
            x[rows, pos] = rearrange(new, "b h d -> b (h d)")
            return (x,) + tuple(args[1:])
        return hook

    handles = []
    try:
        for layer, (mask, values) in patches.items():
            handles.append(model.attn_out_proj(layer).register_forward_pre_hook(make_hook(mask.bool(), values)))
        yield
    finally:
        for h in handles:
            h.remove()


def patch_heads(model: IVModel, values: Mapping[tuple[int, int], torch.Tensor], *, positions: Positions = -1):
    """Convenience form of :func:`patch_head_outputs`: ``{(layer, head): value (d_head,)}``, the
    same for every row. Returns the context manager."""
    g = model.geometry
    patches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for (layer, head), v in values.items():
        if layer not in patches:
            patches[layer] = (torch.zeros(g.n_heads, dtype=torch.bool), torch.zeros(g.n_heads, g.d_head))
        patches[layer][0][head] = True
        patches[layer][1][head] = v.detach().float().cpu()
    return patch_head_outputs(model, patches, positions=positions)


def _block_output_tensor(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_block_output(output, hidden: torch.Tensor):
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    return hidden


@contextmanager
def add_to_residual(
    model: IVModel, layer: int, vector: torch.Tensor, *, scale: float = 1.0, positions: Positions = -1
) -> Iterator[None]:
    """Add ``scale * vector`` to the output of decoder block ``layer`` at ``positions``.

    Args:
        vector: ``(d_model,)``, or ``(B, d_model)`` for one vector per row.
        layer: block index, ``0 <= layer < n_layers``.

    Works whether the block returns a tensor (transformers 5) or a tuple.
    """
    g = model.geometry
    if not 0 <= layer < g.n_layers:
        raise ValueError(f"layer {layer} is out of range: the model has layers 0..{g.n_layers - 1}")
    if vector.shape[-1] != g.d_model:
        raise ValueError(f"vector has width {vector.shape[-1]} but the model's d_model is {g.d_model}")

    def hook(module, args, output):
        h = _block_output_tensor(output)
        rows, pos = _rows_and_positions(positions, h.shape[0], h.shape[1], h.device)
        h = h.clone()
        h[rows, pos] = h[rows, pos] + scale * vector.to(device=h.device, dtype=h.dtype)
        return _replace_block_output(output, h)

    handle = model.block(layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record_residual(model: IVModel, *, positions: Positions = -1) -> Iterator[dict[int, torch.Tensor]]:
    """Record every block's output at ``positions``: yields ``{layer: (B, d_model)}``."""
    out: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(module, args, output):
            h = _block_output_tensor(output)
            rows, pos = _rows_and_positions(positions, h.shape[0], h.shape[1], h.device)
            out[layer] = h[rows, pos].detach().clone()
        return hook

    handles = [model.block(layer).register_forward_hook(make_hook(layer)) for layer in range(model.geometry.n_layers)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
