"""A small GPT-2 that reads a regression prompt and predicts each label from the pairs before it.

Layout
------
A prompt of ``n`` pairs becomes ``n`` positions, one per prediction: position ``i`` holds the
previous example and the current input, ``[x_{i-1}, y_{i-1}, x_i]`` (a ``2d + 1``-vector; the
first position's example part is zeros). A linear *read-in* maps it to the residual width, GPT-2
blocks (``transformers``' ``GPT2Model``, learned absolute positions) run over it, and a linear
*read-out* at every position predicts that position's label: output ``i`` is the prediction of
``y_i`` from ``i`` examples, and no position reads its own label. The last position is the
*query*: patch it (position ``-1``) to change the prediction with ``n - 1`` examples.

Why not one position per input and one per label (``x_0, y_0, x_1, ...``, as in Garg et al.)?
With half the positions it takes half the time per step, and it learns in fewer steps: each
position holds a whole example, whose products ``x y`` and ``x x^T`` the first MLP can form
without attention. ``scripts/synthetic_layouts.py`` compares the two; the numbers are in
``docs/synthetic.md``.

Hooks
-----
The network keeps ``transformers``' modules, at the paths of GPT-2 in ivkit's architecture table
(blocks ``transformer.h``, head outputs at the input of ``attn.c_proj``). ``IVModel`` needs a
tokenizer and runs token ids, which a regression model has neither of, so `hookable` wraps
the network in a `HookedRegression`: the attributes ivkit's interventions use (``model``,
``spec``, ``geometry``, ``backend``, ``block``, ``attn_out_proj``), so that
``ivkit.models.hooks.record_head_outputs`` and ``patch_head_outputs`` work on it unchanged; the
forward pass is then the network's own call:

    view = hookable(net)
    with record_head_outputs(view) as rec:      # the query position, every layer
        net(prompts.xs, prompts.ys)
    z = rec.stack()                             # (batch, n_layers, n_heads, d_head)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.arch import ArchSpec, HeadGeometry, geometry_from_config, get_module, lookup_spec
from ..core.errors import InputError
from ..core.options import check_at_least
from ..models.backends.torch_backend import TorchBackend


@dataclass(frozen=True)
class ModelConfig:
    """Size of the regression transformer.

    Attributes:
        dim: input dimension ``d``.
        n_points: the longest prompt, in pairs (one position per pair).
        n_embd: residual width.
        n_layer: GPT-2 blocks.
        n_head: attention heads per block (``n_embd`` must be a multiple).
    """

    dim: int = 4
    n_points: int = 41
    n_embd: int = 64
    n_layer: int = 4
    n_head: int = 4

    def __post_init__(self) -> None:
        for name in ("dim", "n_points", "n_embd", "n_layer", "n_head"):
            check_at_least(name, getattr(self, name), 1)
        if self.n_embd % self.n_head:
            raise InputError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def gpt2_config(self):
        """The ``transformers.GPT2Config`` of the blocks (no dropout, one dummy token id)."""
        from transformers import GPT2Config

        return GPT2Config(vocab_size=1, n_positions=self.n_points, n_embd=self.n_embd, n_layer=self.n_layer,
                          n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                          bos_token_id=None, eos_token_id=None, attn_implementation="sdpa")


class RegressionGPT2(nn.Module):
    """GPT-2 blocks with a linear read-in and read-out (see the module docstring).

    Attributes:
        settings: the `ModelConfig`.
        config: the ``GPT2Config`` (so that ivkit's architecture table finds ``model_type='gpt2'``).
        read_in: ``Linear(2 d + 1, n_embd)``.
        transformer: the ``transformers.GPT2Model``.
        read_out: ``Linear(n_embd, 1)``.
    """

    def __init__(self, settings: ModelConfig, *, seed: int = 0):
        super().__init__()
        from transformers import GPT2Model

        self.settings = settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.config = settings.gpt2_config()
            self.read_in = nn.Linear(2 * settings.dim + 1, settings.n_embd)
            self.transformer = GPT2Model(self.config)
            self.read_out = nn.Linear(settings.n_embd, 1)

    def embed(self, xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"]) -> Float[Tensor, "batch n d2"]:
        """The ``(batch, n, 2d + 1)`` input vectors of a batch of prompts: ``[x_{i-1}, y_{i-1}, x_i]``."""
        b, n, d = xs.shape
        if d != self.settings.dim:
            raise InputError(f"the prompts have dimension {d} but the model reads {self.settings.dim}")
        if ys.shape != (b, n):
            raise InputError(f"ys must be (batch, n) = {(b, n)}, got {tuple(ys.shape)}")
        if not 1 <= n <= self.settings.n_points:
            raise InputError(f"prompts of {n} pairs: the model reads 1 to {self.settings.n_points}")
        tokens = xs.new_zeros(b, n, 2 * d + 1)
        tokens[:, 1:, :d] = xs[:, :-1]
        tokens[:, 1:, d] = ys[:, :-1]
        tokens[:, :, d + 1:] = xs
        return tokens

    def forward(self, xs: Float[Tensor, "batch n d"], ys: Float[Tensor, "batch n"]) -> Float[Tensor, "batch n"]:
        """Predictions ``(batch, n)``: entry ``i`` predicts ``y_i`` from pairs ``0 .. i-1`` and
        ``x_i`` (the label ``ys[:, i]`` itself is never read; ``ys[:, -1]`` may be anything)."""
        h = self.transformer(inputs_embeds=self.read_in(self.embed(xs, ys)), use_cache=False).last_hidden_state
        return self.read_out(h).squeeze(-1)


@dataclass
class HookedRegression:
    """What ivkit's interventions need of a model, for a `RegressionGPT2`
    (see the module docstring). Make one with `hookable`."""

    model: RegressionGPT2
    spec: ArchSpec
    geometry: HeadGeometry
    backend: TorchBackend

    @property
    def name(self) -> str:
        return "regression-gpt2"

    def block(self, layer: int) -> nn.Module:
        return get_module(self.model, self.spec.layers)[layer]

    def attn_out_proj(self, layer: int) -> nn.Module:
        return get_module(self.block(layer), self.spec.attn_out_proj)


def hookable(net: RegressionGPT2) -> HookedRegression:
    """A view of ``net`` that ``ivkit.models.hooks`` can attach interventions to (torch hooks on
    its GPT-2 modules, found through the architecture table's ``gpt2`` entry)."""
    spec = lookup_spec(net)
    view = HookedRegression(net, spec, geometry_from_config(net.config), TorchBackend())
    if len(get_module(net, spec.layers)) != view.geometry.n_layers:
        raise InputError("the network's blocks do not match its config")  # pragma: no cover - a broken net
    return view
