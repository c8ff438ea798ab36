"""Bilingual word lists for word-level translation (the ``fr`` and ``de`` transforms).

A `Lexicon` maps an English word (lower case) to its translation. It is built from

* a built-in task of word pairs: ``Lexicon.from_task("english-french")`` (or ``english-german``);
* a user's file: a JSON list of ``{"input": word, "output": translation}`` objects, or a
  ``.jsonl`` file with one such object per line (`Lexicon.from_file`);
* both: ``Lexicon.from_task("english-french").merged(Lexicon.from_file("extra.jsonl"))`` (the
  second one's entries win).

Gotchas
-------
* Word level only: every run of letters (apostrophes inside a word included) is looked up on its
  own, so idioms, word order and agreement are not translated. A word the lexicon lacks is kept
  as it is and counted (`Coverage`): always report the coverage with the results.
* A key that is not one word (``"ice cream"``, ``"#the"``) cannot be looked up word by word; it is
  skipped and counted in `Lexicon.skipped`. A translation with alternatives separated by
  ``/`` (``"le/la/les"``) keeps the first.
* Case follows the source word: ``cat`` -> ``chat``, ``Cat`` -> ``Chat``, ``CAT`` -> ``CHAT``
  (so translation commutes with upper- and lower-casing, which the probe's tasks rely on). A
  lower-case source gives a lower-case translation, German nouns included; a one-letter capital
  counts as all upper case (``I`` -> ``JE``).
* The way back (`Lexicon.back`) is the reversed list, first English word first; several
  English words share a translation (``le`` is "the" and "him"), so translation is **not
  invertible** in general.
* A file with the same key twice is refused (with both lines), as is a file with no usable entry.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..core.errors import InputError
from ..core.tasks import load_task
from .files import RecordFileError, read_records

log = logging.getLogger(__name__)

#: a word: letters (any script), with apostrophes inside (``don't``)
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


class LexiconError(InputError):
    """A lexicon file or task cannot be used: empty, duplicate keys, malformed entries."""


@dataclass(frozen=True)
class Coverage:
    """How much of a text a lexicon translated.

    Attributes:
        words: the words in the text.
        translated: those the lexicon had.
        missing: the words it lacked, in order (kept untranslated).
    """

    words: int
    translated: int
    missing: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        """``translated / words`` (1 for a text without words)."""
        return self.translated / self.words if self.words else 1.0

    def __add__(self, other: "Coverage") -> "Coverage":
        return Coverage(self.words + other.words, self.translated + other.translated, self.missing + other.missing)


def match_case(source: str, target: str) -> str:
    """``target`` with ``source``'s case pattern: all upper, capitalised, or lower."""
    letters = [c for c in source if c.isalpha()]
    if letters and all(c.isupper() for c in letters):  # a lone capital too ("A"), so upper() commutes
        return target.upper()
    if letters and letters[0].isupper():
        return target[:1].upper() + target[1:].lower()
    return target.lower()


@dataclass(frozen=True)
class Lexicon:
    """English word (lower case) -> translation.

    Attributes:
        name: a short id (``english-french``, or the file's stem).
        pairs: the entries.
        source: where they came from.
        skipped: entries that are not one word and cannot be used word by word.
    """

    name: str
    pairs: Mapping[str, str]
    source: str = ""
    skipped: int = 0
    _reverse: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise LexiconError(f"the lexicon {self.name!r} ({self.source or 'given in code'}) has no entries: "
                               f"give at least one {{\"input\": word, \"output\": translation}} pair")
        reverse: dict[str, str] = {}
        for k, v in self.pairs.items():
            if WORD.fullmatch(v):
                reverse.setdefault(v.lower(), k)
        object.__setattr__(self, "_reverse", reverse)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"Lexicon({self.name!r}, {len(self.pairs)} words, {self.skipped} skipped, from {self.source!r})"

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def from_task(cls, task: str | Path) -> "Lexicon":
        """The pairs of a built-in task (``english-french``, ``english-german``) or task file,
        through `ivkit.load_task`. Duplicate keys are refused as in `from_file`."""
        t = load_task(task)
        return cls._from_entries(t.name, t.source, [(i + 1, ex.input, ex.output) for i, ex in enumerate(t.examples)],
                                 where="example")

    @classmethod
    def from_file(cls, path: str | Path) -> "Lexicon":
        """A user's lexicon: a JSON list or JSONL file of ``{"input", "output"}`` objects (a
        two-element list ``[word, translation]`` works too). Errors name the file and the line."""
        entries = []
        for line, rec in read_records(path, "lexicon"):
            if isinstance(rec, dict) and "input" in rec and "output" in rec:
                src, tgt = rec["input"], rec["output"]
            elif isinstance(rec, list) and len(rec) == 2:
                src, tgt = rec
            else:
                raise RecordFileError(f"{path}, line {line}: a lexicon entry must be {{\"input\": word, \"output\": "
                                      f"translation}} or [word, translation], got {str(rec)[:80]}")
            if not isinstance(src, str) or not isinstance(tgt, str) or not src.strip() or not tgt.strip():
                raise RecordFileError(f"{path}, line {line}: the word and its translation must be non-empty "
                                      f"strings, got {src!r} -> {tgt!r}")
            entries.append((line, src, tgt))
        return cls._from_entries(Path(path).stem, str(path), entries, where="line")

    @classmethod
    def _from_entries(cls, name: str, source: str, entries: list[tuple[int, str, str]], where: str) -> "Lexicon":
        pairs: dict[str, str] = {}
        seen: dict[str, int] = {}
        skipped = 0
        for n, src, tgt in entries:
            key = src.strip().lower()
            if key in seen:
                raise LexiconError(f"{source}, {where} {n}: duplicate key {src.strip()!r} (first at {where} "
                                   f"{seen[key]}); keep one translation per word")
            seen[key] = n
            if not WORD.fullmatch(key):
                skipped += 1
                continue
            pairs[key] = tgt.split("/")[0].strip() or tgt.strip()
        if not pairs:
            raise LexiconError(f"{source}: no usable entry ({skipped} skipped: a key must be one word); "
                               f"give {{\"input\": word, \"output\": translation}} pairs")
        if skipped:
            log.info("lexicon %s: skipped %d entries whose key is not one word", name, skipped)
        return cls(name, pairs, source, skipped)

    def merged(self, other: "Lexicon") -> "Lexicon":
        """This lexicon with ``other``'s entries added (``other`` wins where both have a word)."""
        return Lexicon(f"{self.name}+{other.name}", {**self.pairs, **other.pairs}, f"{self.source} + {other.source}",
                       self.skipped + other.skipped)

    # ---- use -----------------------------------------------------------------------------

    def translate(self, text: str) -> tuple[str, Coverage]:
        """``text`` with every word the lexicon has replaced (case kept, see the module
        docstring), and the `Coverage`; other characters are kept as they are."""
        missing: list[str] = []
        total = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal total
            total += 1
            word = m.group(0)
            tgt = self.pairs.get(word.lower())
            if tgt is None:
                missing.append(word)
                return word
            return match_case(word, tgt)

        out = WORD.sub(sub, text)
        return out, Coverage(total, total - len(missing), tuple(missing))

    def back(self, text: str) -> str:
        """Word-by-word back to English through the reversed lexicon (not an exact inverse:
        see the module docstring); words it does not know are kept."""
        def sub(m: re.Match[str]) -> str:
            word = m.group(0)
            src = self._reverse.get(word.lower())
            return word if src is None else match_case(word, src)

        return WORD.sub(sub, text)
