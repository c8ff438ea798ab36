"""How a decoder block is called: the one place that knows.

The exact continuation engine (`ivkit.fast`) re-runs decoder blocks by hand, on a few rows
and positions, over a cached prefix. To do that it must re-make every argument the model itself
passed to each block. transformers renames these from release to release (5.24 calls the KV
cache ``cache``; 5.23 and earlier, ``past_key_values``; GPT-2 passes it positionally), so ivkit
never lists the names the engine expects. Instead, a block's call is *bound* to the block's own
signature (positional arguments get their names), and each argument is classified by what it
is:

What each argument of a decoder block becomes in the continuation:

* the hidden states (first): the rows' hidden states ``(rows, S, d_model)``
* a KV cache (any name): a stand-in that returns each row's own keys/values
* ``attention_mask``: the continuation context (prefix keys/values and padding)
* a per-position tensor (``(P, T, ...)``) or tuple (``position_ids``, ``position_embeddings``,
  ``cache_position``, ...): its last ``S`` positions, repeated for each prompt's rows
* ``use_cache``: ``False``
* anything else not a tensor: unchanged (flags, ``None``)

A tensor argument of any other shape cannot be re-made per row: that is an explicit capability
check, which raises `FastPathUnsupported` with the argument's name. So does a model whose
top-level ``forward`` takes no KV cache argument.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

#: Names transformers has used for the KV cache argument, newest first.
CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")


class FastPathUnsupported(RuntimeError):
    """The fast path cannot reproduce this model's forward pass (an explicit capability check);
    the caller may fall back to the naive path, and records that it did."""


def _is_cache(value: Any) -> bool:
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Cache)


def cache_argument(model: torch.nn.Module) -> str:
    """The name under which ``model.forward`` (a causal LM) takes its KV cache."""
    params = inspect.signature(model.forward).parameters
    for name in CACHE_ARGUMENTS:
        if name in params:
            return name
    raise FastPathUnsupported(f"{type(model).__name__}.forward takes no KV cache argument "
                              f"(none of {', '.join(CACHE_ARGUMENTS)})")


def bind_block_call(block: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """A block's call as ``(hidden_states, {name: value})``, positional arguments named by the
    block's signature (what a forward pre-hook with ``with_kwargs=True`` receives)."""
    # The class's own forward: wrappers (nnsight) may replace the instance's with a callable whose
    # signature still lists ``self``.
    sig = inspect.signature(type(block).forward)
    try:
        bound = sig.bind(block, *args, **kwargs)
    except TypeError as e:
        raise FastPathUnsupported(f"{type(block).__name__}'s call does not fit its signature ({e})") from None
    params = list(sig.parameters)
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name == params[0]:  # self
            continue
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise FastPathUnsupported(f"{type(block).__name__} takes extra positional arguments (*{name})")
        else:
            named[name] = value
    first = params[1] if len(params) > 1 else None
    if first not in named:
        raise FastPathUnsupported(f"{type(block).__name__} was called without its hidden states")
    return named.pop(first), named


def check_remakeable(kwargs: dict[str, Any], seq_len: int) -> None:
    """Raise `FastPathUnsupported` naming any argument the continuation cannot re-make."""
    bad = [k for k, v in kwargs.items() if k != "attention_mask" and not _is_cache(v) and not _per_position(v, seq_len)
           and _has_tensor(v)]
    if bad:
        raise FastPathUnsupported(f"decoder blocks take tensor arguments it cannot re-make per row: {sorted(bad)}")


def _has_tensor(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(v) for v in value)
    return torch.is_tensor(value)


def _per_position(value: Any, seq_len: int) -> bool:
    if isinstance(value, (tuple, list)):
        return bool(value) and all(_per_position(v, seq_len) for v in value)
    if not torch.is_tensor(value):
        return False
    return (value.dim() >= 2 and value.shape[1] == seq_len) or (value.dim() == 1 and value.shape[0] == seq_len)


def rows_of(value: Any, s: int, seq_len: int, n: int) -> Any:
    """The last ``s`` positions of a per-position argument, each prompt's repeated for its ``n``
    rows: ``(P, T, ...)`` -> ``(P * n, s, ...)``; a ``(T,)`` tensor (``cache_position``) ->
    ``(s,)``; tuples element-wise; anything else unchanged."""
    if isinstance(value, (tuple, list)):
        return type(value)(rows_of(v, s, seq_len, n) for v in value)
    if not torch.is_tensor(value):
        return value
    if value.dim() >= 2 and value.shape[1] == seq_len:
        return value[:, seq_len - s:].repeat_interleave(n, dim=0)
    if value.dim() == 1 and value.shape[0] == seq_len:
        return value[seq_len - s:]
    raise FastPathUnsupported(f"cannot re-make a block argument of shape {tuple(value.shape)}")


def remake_block_kwargs(kwargs: dict[str, Any], *, context: Any, own_cache: Any, s: int, seq_len: int,
                        n: int) -> dict[str, Any]:
    """The arguments for re-running a block on ``n`` rows per prompt over the cached prefix (see
    the module docstring)."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "attention_mask":
            out[key] = context
        elif _is_cache(value) or (key in CACHE_ARGUMENTS and value is not None):
            out[key] = own_cache
        elif key == "use_cache":
            out[key] = False
        else:
            out[key] = rows_of(value, s, seq_len, n)
    return out
