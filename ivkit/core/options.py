"""Every choice-valued option ivkit takes, as a ``Literal`` type, and the one check for each.

Functions annotate their options with these types, and the command line builds its choices from
the same types (Typer reads ``Literal``), so a value is spelled the same everywhere. A wrong value
fails once, early, in `check_choice`, with the allowed values and the closest one.

* ``Method``: values: how indirect effects are computed: ``fast`` (exact continuation), ``naive``
  (one pass per head, the oracle), ``attribution`` (first order)
* ``SweepMethod``: values: how the layer sweep runs: ``fast`` or ``naive``
* ``MetricName``: values: ``prob`` (P(first answer token)), ``logit``, ``nll`` (whole answer, -ΔNLL)
* ``Injection``: values: how an IV is injected: ``residual`` (after one block) or ``heads`` (each
  head set to scale x its mean at its own layer)
* ``InjectionChoice``: values: an ``Injection``, or ``auto`` (the validation sweep chooses)
* ``Ranking``: values: what ranks the heads: ``shuffled`` (10-shot, labels shuffled) or
  ``zero_shot`` (zero-shot training prompts)
* ``RankingChoice``: values: a ``Ranking``, or ``both`` (the validation sweep chooses)
* ``Selection``: values: ``top_k`` or ``greedy``
* ``Recipe``: values: ``reference`` (the options as given) or ``auto`` (every ranking, selection and
  injection tried, the validation split choosing)
* ``PostNorm``: values: Gemma's post-attention norm in a head's contribution:
  ``linearized``/``ignore``
* ``CleanStyle``: values: the style of the prompts an IV is built from: ``few_shot`` or
  ``instruction``
* ``PromptStyle``: values: every prompt style (`ivkit.core.prompts`)
* ``TrackMode``: values: ``fixed`` (reference heads) or ``rerank`` (AIE per checkpoint)
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import math
from typing import Any, Iterable, Iterator, Literal, Mapping, get_args

from .errors import InputError

Method = Literal["fast", "naive", "attribution"]
SweepMethod = Literal["fast", "naive"]
MetricName = Literal["prob", "logit", "nll"]
Injection = Literal["residual", "heads"]
InjectionChoice = Literal["residual", "heads", "auto"]
Ranking = Literal["shuffled", "zero_shot"]
RankingChoice = Literal["shuffled", "zero_shot", "both"]
Selection = Literal["top_k", "greedy"]
Recipe = Literal["reference", "auto"]
PostNorm = Literal["linearized", "ignore"]
CleanStyle = Literal["few_shot", "instruction"]
PromptStyle = Literal["few_shot", "shuffled", "zero_shot", "instruction", "chat"]
TrackMode = Literal["fixed", "rerank"]
Corruption = Literal["wrong", "empty"]  # an instruction-built IV's corrupted prompts: a wrong instruction, or none


_NAMES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("ivkit_option_names", default={})


@contextlib.contextmanager
def option_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, errors name options as ``names`` says (the command line passes its flag
    names, so ``top_k`` reads ``--top-k``)."""
    token = _NAMES.set(names)
    try:
        yield
    finally:
        _NAMES.reset(token)


def shown(name: str) -> str:
    """How errors name option ``name`` (see `option_names`)."""
    return _NAMES.get().get(name, name)


def choices(kind: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` type."""
    return tuple(get_args(kind))


def check_choice(name: str, value: Any, kind: Any) -> Any:
    """``value`` if it is one of ``kind``'s values; otherwise an `InputError` naming the
    option, the allowed values and the closest one."""
    allowed = choices(kind)
    if value in allowed:
        return value
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    name = shown(name)
    raise InputError(f"unknown {name} {value!r}: {name} must be one of {', '.join(allowed)}{hint}")


def check_at_least(name: str, value: Any, low: int) -> int:
    """``int(value)`` if it is a whole number of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
        raise InputError(f"{shown(name)} must be at least {low} (a whole number), got {value!r}")
    return int(value)


def check_finite(name: str, values: Iterable[Any], *, nonempty: bool = True) -> tuple[float, ...]:
    """The values as floats, if every one is a finite number (and there is one, with ``nonempty``)."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{shown(name)} must be numbers, got {values!r}") from None
    if nonempty and not out:
        raise InputError(f"{shown(name)} needs at least one value")
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"{shown(name)} must be finite, got {list(out)}")
    return out


def unknown_option(name: str, known: Iterable[str], where: str) -> InputError:
    """The error for an option ``where`` does not take, with the closest known one."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return InputError(f"{where} has no option {name!r}{hint}")
