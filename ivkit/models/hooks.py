"""Reading and patching per-head outputs, and adding vectors to the residual stream.

Hook points (shapes for a batch of ``B`` rows and ``T`` positions)
-------------------------------------------------------------------
* head outputs ``z``: where: *input* of the attention output projection (``self_attn.o_proj``,
  ``attn.c_proj``, ``attention.dense``); tensor: ``(B, T, n_heads * d_head)``, viewed as ``(B, T,
  n_heads, d_head)``
* block output (residual): where: output of decoder block ``L``; tensor: ``(B, T, d_model)``

Positions are either one int for every row (``-1``, the last token, the default: batches are
left-padded so the last token is always at ``-1``) or a ``(B,)`` tensor of indices. Patching
heads and adding to the residual stream also take a ``slice`` of positions, applied to every row
(generation uses ``slice(-n, None)``: the last prompt token and the tokens generated so far).

Gotchas
-------
* Under transformers 5 a decoder block returns a tensor, older versions a tuple. The block hook
  here edits either; a hook that edits only tuples silently does nothing on transformers 5.
  ``tests/test_hooks.py`` checks that every hook changes the logits.
* During generation with a KV cache each step's input is the new token alone, so "position -1"
  is the prompt's last token on the first step and each new token after.
* All hooks are removed when their ``with`` block exits, even on error.
* These context managers work on every backend (``torch``, ``transformer-lens``, ``nnsight``):
  each one attaches an `Intervention` through ``model.backend``, and
  the effect shows in the next ``model.forward(batch)``. With the torch backend the hooks are
  plain PyTorch hooks, so they also act on direct calls of the HF modules.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from einops import rearrange

from ..core.errors import BackendError, IncompatibleVectorError, InputError
from .backends.base import Intervention
from .model import IVModel

Positions = int | torch.Tensor


def _rows_and_positions(positions: Positions, batch: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(batch, device=device)
    if isinstance(positions, int):
        pos = torch.full((batch,), positions % length, device=device, dtype=torch.long)
    else:
        pos = positions.to(device=device, dtype=torch.long)
        if pos.shape != (batch,):
            raise InputError(f"positions must be an int or a ({batch},) tensor, got shape {tuple(pos.shape)}")
    return rows, pos


@contextmanager
def attached(model: IVModel, intervention: Intervention) -> Iterator[Intervention]:
    """Attach ``intervention`` through ``model.backend`` for the duration of the block."""
    detach = model.backend.attach(model, intervention)
    try:
        yield intervention
    finally:
        detach()


# --------------------------------------------------------------------------------------------
# Interventions
# --------------------------------------------------------------------------------------------


class HeadRecord(Intervention):
    """Head outputs captured by `record_head_outputs`.

    ``z[layer]`` is ``(B, n_heads, d_head)`` at the requested positions of the last forward pass.
    """

    site = "heads"
    reads_only = True

    def __init__(self, n_heads: int, d_head: int, layers: Sequence[int] = (), positions: Positions = -1,
                 detach: bool = True):
        self.n_heads, self.d_head = n_heads, d_head
        self.layers, self.positions, self.detach = tuple(layers), positions, detach
        self.z: dict[int, torch.Tensor] = {}

    def edit(self, layer: int, x: torch.Tensor) -> None:
        rows, pos = _rows_and_positions(self.positions, x.shape[0], x.shape[1], x.device)
        z = rearrange(x[rows, pos], "b (h d) -> b h d", h=self.n_heads)
        self.z[layer] = z.detach().clone() if self.detach else z
        return None

    def stack(self, layers: Sequence[int] | None = None) -> torch.Tensor:
        """Head outputs as one tensor ``(B, n_layers_recorded, n_heads, d_head)``."""
        layers = sorted(self.z) if layers is None else layers
        if not layers or any(layer not in self.z for layer in layers):
            raise RuntimeError("no head outputs were recorded: run a forward pass inside the with-block")
        return torch.stack([self.z[layer] for layer in layers], dim=1)


class HeadPatch(Intervention):
    """Replace masked heads of ``layer`` at ``positions`` with ``values`` (see
    `patch_head_outputs`)."""

    site = "heads"

    def __init__(self, layer: int, mask: torch.Tensor, values: torch.Tensor, n_heads: int, d_head: int,
                 positions: Positions | slice = -1):
        self.layers = (layer,)
        self.mask, self.values, self.positions = mask.bool(), values, positions
        self.n_heads, self.d_head = n_heads, d_head

    def edit(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device).expand(x.shape[0], self.n_heads)
        v = self.values.to(device=x.device, dtype=x.dtype).expand(x.shape[0], self.n_heads, self.d_head)
        if isinstance(self.positions, slice):  # the same heads at several positions of every row
            out = x.clone()
            z = rearrange(out[:, self.positions], "b t (h d) -> b t h d", h=self.n_heads)
            new = torch.where(m[:, None, :, None], v[:, None], z)
            out[:, self.positions] = rearrange(new, "b t h d -> b t (h d)")
            return out
        rows, pos = _rows_and_positions(self.positions, x.shape[0], x.shape[1], x.device)
        z = rearrange(x[rows, pos], "b (h d) -> b h d", h=self.n_heads)
        new = torch.where(m[..., None], v, z)
        return x.index_put((rows, pos), rearrange(new, "b h d -> b (h d)"))


class HeadPerturbation(Intervention):
    """Adds a zero tensor that requires grad to every head output at ``positions``, so that
    ``torch.autograd.grad(metric, perturbation.zeros[l])`` is ``d metric / d z_l``
    ``(B, n_heads * d_head)``. ``values[l]`` keeps the unperturbed outputs. Used by
    ``method="attribution"``; needs a backend with ``supports_grad``."""

    site = "heads"

    def __init__(self, layers: Sequence[int], positions: Positions = -1):
        self.layers, self.positions = tuple(layers), positions
        self.zeros: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def edit(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        rows, pos = _rows_and_positions(self.positions, x.shape[0], x.shape[1], x.device)
        self.values[layer] = x[rows, pos].detach()
        self.zeros[layer] = torch.zeros_like(self.values[layer], requires_grad=True)
        return x.index_put((rows, pos), x[rows, pos] + self.zeros[layer])


class ResidualAddition(Intervention):
    """Adds ``scale * vector`` to the output of block ``layer`` at ``positions`` (an int or a
    ``(B,)`` tensor, see the module docstring, or a ``slice`` of positions taken in every row)."""

    site = "block"

    def __init__(self, layer: int, vector: torch.Tensor, scale: float = 1.0, positions: Positions | slice = -1):
        self.layers, self.vector, self.scale, self.positions = (layer,), vector, scale, positions

    def edit(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        add = self.scale * self.vector.to(device=h.device, dtype=h.dtype)
        if isinstance(self.positions, slice):
            out = h.clone()
            out[:, self.positions] = out[:, self.positions] + (add[:, None] if add.dim() == 2 else add)
            return out
        rows, pos = _rows_and_positions(self.positions, h.shape[0], h.shape[1], h.device)
        return h.index_put((rows, pos), h[rows, pos] + add)


class ResidualRecord(Intervention):
    """Records each block's output at ``positions`` into ``out[layer]`` ``(B, d_model)``."""

    site = "block"
    reads_only = True

    def __init__(self, layers: Sequence[int], positions: Positions = -1):
        self.layers, self.positions = tuple(layers), positions
        self.out: dict[int, torch.Tensor] = {}

    def edit(self, layer: int, h: torch.Tensor) -> None:
        rows, pos = _rows_and_positions(self.positions, h.shape[0], h.shape[1], h.device)
        self.out[layer] = h[rows, pos].detach().clone()
        return None


# --------------------------------------------------------------------------------------------
# Context managers (the public API)
# --------------------------------------------------------------------------------------------


@contextmanager
def record_head_outputs(
    model: IVModel, *, layers: Sequence[int] | None = None, positions: Positions = -1, detach: bool = True
) -> Iterator[HeadRecord]:
    """Record each head's output (the attention projection's input) at ``positions``.

    Yields a `HeadRecord`; after a forward pass ``record.stack()`` is
    ``(B, n_layers, n_heads, d_head)``.
    """
    g = model.geometry
    layers = range(g.n_layers) if layers is None else layers
    with attached(model, HeadRecord(g.n_heads, g.d_head, layers, positions, detach)) as record:
        yield record


@contextmanager
def patch_head_outputs(
    model: IVModel, patches: Mapping[int, tuple[torch.Tensor, torch.Tensor]], *, positions: Positions | slice = -1
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
    detachers = []
    try:
        for layer, (mask, values) in patches.items():
            detachers.append(model.backend.attach(model, HeadPatch(layer, mask, values, g.n_heads, g.d_head, positions)))
        yield
    finally:
        for d in detachers:
            d()


def patch_heads(model: IVModel, values: Mapping[tuple[int, int], torch.Tensor], *, positions: Positions | slice = -1):
    """Convenience form of `patch_head_outputs`: ``{(layer, head): value (d_head,)}``, the
    same for every row. Returns the context manager."""
    g = model.geometry
    patches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for (layer, head), v in values.items():
        if layer not in patches:
            patches[layer] = (torch.zeros(g.n_heads, dtype=torch.bool), torch.zeros(g.n_heads, g.d_head))
        patches[layer][0][head] = True
        patches[layer][1][head] = v.detach().float().cpu()
    return patch_head_outputs(model, patches, positions=positions)


@contextmanager
def perturb_head_outputs(model: IVModel, *, positions: Positions = -1) -> Iterator[HeadPerturbation]:
    """Yield a `HeadPerturbation` on every layer: after a forward pass, the gradient of
    anything computed from the logits with respect to ``perturbation.zeros[l]``
    ``(B, n_heads * d_head)`` is its derivative with respect to layer ``l``'s head outputs at
    ``positions``."""
    if not model.backend.supports_grad:
        raise BackendError(
            f"the {model.backend.name} backend does not pass gradients through interventions, which "
            f"method='attribution' needs: use method='naive', or backend='torch' or 'transformer-lens'"
        )
    with attached(model, HeadPerturbation(range(model.geometry.n_layers), positions)) as p:
        yield p


@contextmanager
def add_to_residual(
    model: IVModel, layer: int, vector: torch.Tensor, *, scale: float = 1.0, positions: Positions | slice = -1
) -> Iterator[None]:
    """Add ``scale * vector`` to the output of decoder block ``layer`` at ``positions``.

    Args:
        vector: ``(d_model,)``, or ``(B, d_model)`` for one vector per row.
        layer: block index, ``0 <= layer < n_layers``.
        positions: an int or a ``(B,)`` tensor (see the module docstring), or a ``slice`` of
            positions taken in every row (e.g. ``slice(-3, None)``: the last three).

    Works whether the block returns a tensor (transformers 5) or a tuple.
    """
    g = model.geometry
    if not 0 <= layer < g.n_layers:
        raise InputError(f"layer {layer} is out of range: the model has layers 0..{g.n_layers - 1}")
    if vector.shape[-1] != g.d_model:
        raise IncompatibleVectorError(
            f"the vector has width {vector.shape[-1]} but {model.name}'s d_model is {g.d_model}: it comes from "
            f"another model. Extract or load a vector made on this model")
    with attached(model, ResidualAddition(layer, vector, scale, positions)):
        yield


@contextmanager
def record_residual(model: IVModel, *, positions: Positions = -1) -> Iterator[dict[int, torch.Tensor]]:
    """Record every block's output at ``positions``: yields ``{layer: (B, d_model)}``."""
    with attached(model, ResidualRecord(range(model.geometry.n_layers), positions)) as rec:
        yield rec.out
