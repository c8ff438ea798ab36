"""Reading users' JSON and JSONL files record by record, each with the line it starts on.

Probe files and lexicon files are lists of small objects. Errors about one of them must name the
file and the line, so `read_records` yields ``(line, record)`` pairs for both layouts:

* ``.jsonl``: one JSON value per non-blank line;
* anything else: one JSON list; each element's line is where it starts.

Nothing here knows what a record means; the callers check the fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import InputError


class RecordFileError(InputError):
    """A probe or lexicon file is missing, not UTF-8, not JSON, or has a malformed record. The
    message names the file and, where one is to blame, the line."""


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def read_text(path: str | Path, what: str) -> tuple[Path, str]:
    """The file's text, or a `RecordFileError` saying why it cannot be read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RecordFileError(f"{p}: no such {what} file")
    if p.is_dir():
        raise RecordFileError(f"{p} is a directory; pass a .json or .jsonl {what} file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecordFileError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    return p, text


def read_records(path: str | Path, what: str) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` for every record of a JSON list or JSONL file (``what`` names the kind
    of file in errors: ``"probe"``, ``"lexicon"``)."""
    p, text = read_text(path, what)
    if not text.strip():
        raise RecordFileError(f"{p}: the {what} file is empty")
    if p.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordFileError(f"{p}, line {n}: invalid JSON (column {e.colno}: {e.msg})") from None
        return
    yield from _list_records(p, text, what)


def _list_records(p: Path, text: str, what: str) -> Iterator[tuple[int, Any]]:
    """The elements of a JSON list, each with the line it starts on (decoded one at a time)."""
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if text[i] != "[":
        raise RecordFileError(f"{p}, line {_line_of(text, i)}: a {what} file must be a JSON list of objects "
                              f"(or a .jsonl file with one object per line)")
    i += 1
    first = True
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "]":
            rest = text[i + 1:].strip()
            if rest:
                raise RecordFileError(f"{p}, line {_line_of(text, i + 1 + text[i + 1:].index(rest[0]))}: "
                                      f"text after the end of the list")
            return
        if not first:
            if i >= len(text) or text[i] != ",":
                raise RecordFileError(f"{p}, line {_line_of(text, min(i, len(text)))}: expected ',' or ']' "
                                      f"between the list's elements")
            i += 1
            while i < len(text) and text[i].isspace():
                i += 1
        try:
            value, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise RecordFileError(f"{p}, line {e.lineno}: invalid JSON (column {e.colno}: {e.msg})") from None
        yield _line_of(text, i), value
        i, first = end, False
