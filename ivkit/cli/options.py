"""Command-line options built from a typed configuration's fields.

`with_config_options` adds one option per field of a frozen dataclass (its flag, default and
help come from the field and its ``metadata``) to a Typer command, and hands the command the
values as one dict; `build_config` turns that dict into the configuration inside
`option_names`, so an error names the flag (``--top-k``), not the field.
The values are checked once, by the configuration itself: the command line parses text (comma
lists into tuples) and checks nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Any, Callable, Literal, Optional, TypeVar

import typer

from ..core.errors import InputError
from ..core.options import choices, option_names

C = TypeVar("C")


def flag(f: dataclasses.Field) -> str:
    """The field's flag: ``metadata["cli"]`` or ``--field-name``."""
    return f.metadata.get("cli") or "--" + f.name.replace("_", "-")


def _cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", None) != ""]


def _text(default: Any) -> str | None:
    return None if default is None else ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)


def _base(hint: Any) -> Any:
    """The type a field holds, ``None`` taken out of an optional one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _parameter(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    """The Typer option of one field: text for choices and lists (the configuration checks them),
    a ``--x/--no-x`` flag for a bool, the field's own type otherwise."""
    base, help_text, default = _base(hint), f.metadata.get("help", ""), f.default
    decl = flag(f)
    if typing.get_origin(base) is Literal:
        help_text += f" (one of: {', '.join(choices(base))})"
        annotation = Optional[str]
    elif typing.get_origin(base) is tuple:
        help_text += " (comma-separated)"
        annotation, default = Optional[str], _text(default)
    elif base is bool:
        annotation, decl = bool, f"{decl}/--no-{decl[2:]}"
    else:
        annotation = Optional[base]
    option = typer.Option(default, decl, help=help_text, show_default=default is not None)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def with_config_options(cls: type, into: str = "config_values") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the command gets one option per field of ``cls`` and receives them as the
    keyword argument ``into`` (a dict of field name to the text or value given)."""
    hints = typing.get_type_hints(cls)
    fields = _cli_fields(cls)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(command)
        own = [p for p in sig.parameters.values() if p.name != into]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in fields}
            return command(*args, **{into: values}, **kwargs)

        params = own + [_parameter(f, hints[f.name]) for f in fields]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper
    return decorate


def parse_list(text: str, kind: type, name: str) -> tuple:
    """``"3,5,10"`` -> ``(3, 5, 10)``; a clear usage error naming the flag otherwise."""
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        word = "an integer" if kind is int else "a number"
        raise typer.BadParameter(f"{name}: expected {word} or a comma-separated list, got {text!r}") from None


def build_config(cls: type[C], values: dict[str, Any], **overrides: Any) -> C:
    """The configuration from the command line's values (text lists parsed), its errors naming the
    flags."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        tup = next((a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is tuple), None)
        if tup is not None and isinstance(value, str):
            value = parse_list(value, typing.get_args(tup)[0], flag(fields[name]))
        parsed[name] = value
    parsed.update(overrides)
    with option_names({f.name: flag(f) for f in fields.values()}):
        try:
            return cls(**parsed)
        except InputError as e:
            raise typer.BadParameter(str(e)) from None
