"""Prompt transforms for conjugate prompting: each a pair ``s`` and ``s^-1`` on text.

Conjugate prompting (Kotha et al., ICLR 2024) moves a prompt away from the fine-tuning data while
keeping its task: apply ``s`` to the prompt, let the model answer, map the answer back with
``s^-1``. The transforms here:

* ``none``: ``s``: nothing (the plain prompt); invertible?: yes
* ``leet``: ``s``: ``a e i o s t`` -> ``4 3 1 0 5 7``, either case; invertible?: **no**: the way
  back turns every ``0 1 3 4 5 7`` into a letter and cannot restore upper case; exact on text with
  neither (`Transform.exact_on`)
* ``piglatin``: ``s``: per word: the consonants before the first vowel move to the end after a
  hyphen, then ``ay`` (``hello`` -> ``ello-hay``, ``eat`` -> ``eat-ay``, ``HELLO`` -> ``ELLO-HAY``);
  invertible?: yes, on any text
* ``fr``, ``de``: ``s``: word by word through a `Lexicon` built from the built-in
  ``english-french`` / ``english-german`` tasks; unknown words kept and counted; invertible?:
  **no** (several words share a translation; unknown words are kept): see `.lexicon`

Your own transform is two functions: ``custom("rot13", enc, dec)``. It is checked at once: if it
claims to be invertible (it does when it has an inverse, unless ``invertible=False``) and
``dec(enc(x)) != x`` for one of a sample of built-in task words and seeded random strings, a
`TransformError` names it and the first counterexample.

Gotchas
-------
* The hyphenated Pig Latin is a choice: the hyphen and the ``ay`` suffix (upper case for an
  all-capital word) are what make the way back exact; the hyphen-less form is ambiguous
  (``eatway`` could be "eat" or "weat").
* ``s`` must commute with the probe's in-context tasks for a conjugated prompt to ask for the same
  thing (`ivkit.conjugate.probe` checks this on every prompt): every built-in transform
  commutes with upper- and lower-casing.
* The inverse of a model's output is best effort: a Pig Latin word it cannot parse, or a word a
  lexicon does not know, is kept as it is.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

from ..core.errors import InputError
from ..core.options import check_choice, choices
from ..core.tasks import load_task
from .lexicon import Coverage, Lexicon

#: the built-in transforms, by name
TransformName = Literal["none", "leet", "piglatin", "fr", "de"]
BUILTIN_TRANSFORMS: tuple[str, ...] = choices(TransformName)
#: the built-in lexicon task behind each translation transform
LEXICON_TASKS = {"fr": "english-french", "de": "english-german"}


class TransformError(InputError):
    """A transform is unusable: its inverse does not undo it though it claims to, it returns
    something other than text, or it has no inverse where one is needed."""


@dataclass(frozen=True, eq=False)
class Transform:
    """A prompt transform ``s`` with its way back ``s^-1``.

    Attributes:
        name: the id used in tables, plots and on the command line.
        forward: ``s``, text -> text.
        inverse: ``s^-1``, text -> text (best effort where not invertible), or None.
        invertible: whether ``inverse(forward(x)) == x`` for every text.
        note: where and why the round trip fails, for a transform that is not invertible.
        domain: for a transform that is not invertible, the texts on which the round trip is
            exact (tested on those), or None.
        lexicon: the `Lexicon` of a translation transform.
    """

    name: str
    forward: Callable[[str], str]
    inverse: Callable[[str], str] | None = None
    invertible: bool = False
    note: str = ""
    domain: Callable[[str], bool] | None = None
    lexicon: Lexicon | None = None

    def __call__(self, text: str) -> str:
        out = self.forward(text)
        if not isinstance(out, str):
            raise TransformError(f"transform {self.name!r} returned {type(out).__name__}, not text, for {text!r}")
        return out

    def invert(self, text: str) -> str:
        """``s^-1(text)``."""
        if self.inverse is None:
            raise TransformError(f"transform {self.name!r} has no inverse; give one to map answers back")
        out = self.inverse(text)
        if not isinstance(out, str):
            raise TransformError(f"the inverse of transform {self.name!r} returned {type(out).__name__}, not text")
        return out

    def coverage(self, text: str) -> Coverage | None:
        """For a translation, how many of ``text``'s words the lexicon has; None otherwise."""
        return None if self.lexicon is None else self.lexicon.translate(text)[1]

    def exact_on(self, text: str) -> bool:
        """Whether the round trip must be exact on ``text`` (everywhere for an invertible
        transform; on its `domain` otherwise)."""
        if self.inverse is None:
            return False
        return self.invertible or (self.domain is not None and bool(self.domain(text)))

    def check(self, texts: Iterable[str] | None = None) -> int:
        """Check ``s^-1(s(x)) == x`` on every ``x`` of ``texts`` (default: `sample_texts`)
        where it must hold (`exact_on`); returns how many were checked.

        Raises:
            TransformError: naming the transform and the first text it does not give back.
        """
        n = 0
        for x in sample_texts() if texts is None else texts:
            if not self.exact_on(x):
                continue
            y = self(x)
            back = self.invert(y)
            if back != x:
                claim = "claims to be invertible" if self.invertible else "claims to be exact on this text"
                raise TransformError(
                    f"transform {self.name!r} {claim} but its inverse does not undo it: s({x!r}) = {y!r} and "
                    f"s^-1 of that = {back!r}. Fix the inverse, or declare it with invertible=False")
            n += 1
        return n

    def __repr__(self) -> str:
        inv = "invertible" if self.invertible else f"not invertible ({self.note})" if self.note else "not invertible"
        lex = f", lexicon {len(self.lexicon)} words" if self.lexicon is not None else ""
        return f"Transform({self.name!r}, {inv}{lex})"


# --------------------------------------------------------------------------------------------
# The built-in transforms
# --------------------------------------------------------------------------------------------


def identity() -> Transform:
    """``none``: the plain prompt."""
    return Transform("none", lambda x: x, lambda x: x, invertible=True)


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7",
                       "A": "4", "E": "3", "I": "1", "O": "0", "S": "5", "T": "7"})
_UNLEET = str.maketrans({"4": "a", "3": "e", "1": "i", "0": "o", "5": "s", "7": "t"})
_LEET_LOSSY = frozenset("013457AEIOST")


def leetspeak() -> Transform:
    """``leet``: ``a e i o s t`` (either case) -> ``4 3 1 0 5 7``. Not invertible: the way back
    turns those digits into lower-case letters, so text that had such digits or upper-case
    ``A E I O S T`` does not come back; exact on all other text."""
    return Transform("leet", lambda x: x.translate(_LEET), lambda x: x.translate(_UNLEET), invertible=False,
                     note="the digits 0 1 3 4 5 7 and capital A E I O S T do not come back",
                     domain=lambda x: not (_LEET_LOSSY & set(x)))


_LETTERS = re.compile(r"[A-Za-z]+")
_VOWELS = frozenset("aeiouAEIOU")
_SUFFIX = re.compile(r"([^aeiouAEIOU]*)(ay|AY)")


def _pig_word(word: str) -> str:
    cut = next((i for i, c in enumerate(word) if c in _VOWELS), len(word))
    if cut == len(word):  # no vowel ("rhythm", "TV"): nothing moves
        cut = 0
    suffix = "AY" if word.isupper() else "ay"
    return f"{word[cut:]}-{word[:cut]}{suffix}"


def to_pig_latin(text: str) -> str:
    """Hyphenated Pig Latin of every run of ASCII letters; everything else kept."""
    return _LETTERS.sub(lambda m: _pig_word(m.group(0)), text)


def from_pig_latin(text: str) -> str:
    """The way back: a letter run, a single ``-``, then a run of consonants + ``ay`` (or
    ``AY``) becomes the consonants + the first run; anything else is kept."""
    runs = _LETTERS.findall(text)
    parts = _LETTERS.split(text)  # parts[i]: the text before run i (parts[-1]: after the last run)
    out = [parts[0]]
    i = 0
    while i < len(runs):
        m = _SUFFIX.fullmatch(runs[i + 1]) if i + 1 < len(runs) and parts[i + 1] == "-" else None
        if m is not None:
            out += [m.group(1) + runs[i], parts[i + 2]]
            i += 2
        else:
            out += [runs[i], parts[i + 1]]
            i += 1
    return "".join(out)


def pig_latin() -> Transform:
    """``piglatin``: hyphenated Pig Latin (see the module docstring); invertible on any text."""
    return Transform("piglatin", to_pig_latin, from_pig_latin, invertible=True)


def translation(lexicon: Lexicon, name: str | None = None) -> Transform:
    """Word-level translation through ``lexicon`` (see `.lexicon`). Not invertible: its
    inverse is the reversed lexicon, best effort."""
    return Transform(name or lexicon.name, lambda x: lexicon.translate(x)[0], lexicon.back, invertible=False,
                     note="word-level; several words share a translation, unknown words are kept",
                     lexicon=lexicon)


def custom(name: str, forward: Callable[[str], str], inverse: Callable[[str], str] | None = None, *,
           invertible: bool | None = None, check: bool = True, texts: Sequence[str] | None = None) -> Transform:
    """Your own transform: ``forward`` is ``s``, ``inverse`` is ``s^-1``.

    Args:
        invertible: whether ``inverse(forward(x)) == x`` for all text; default: True when an
            inverse is given.
        check: test that claim now on ``texts`` (default `sample_texts`: built-in task
            words and seeded random strings), raising `TransformError` naming the
            transform and the first counterexample.
    """
    if not isinstance(name, str) or not name.strip() or "," in name:
        raise TransformError(f"a transform needs a non-empty name without commas, got {name!r}")
    if not callable(forward) or (inverse is not None and not callable(inverse)):
        raise TransformError(f"transform {name!r}: forward and inverse must be functions of one string")
    invertible = inverse is not None if invertible is None else bool(invertible)
    if invertible and inverse is None:
        raise TransformError(f"transform {name!r} is declared invertible but has no inverse")
    t = Transform(name, forward, inverse, invertible=invertible)
    if check and invertible:
        t.check(texts)
    return t


def get_transform(name: str, lexicons: dict[str, Lexicon] | None = None) -> Transform:
    """A transform by name: a built-in one (`BUILTIN_TRANSFORMS`), or a translation
    through one of ``lexicons`` (name -> `Lexicon`). A lexicon named ``fr`` or ``de`` is
    merged into the built-in one (its entries win)."""
    lexicons = lexicons or {}
    if name in LEXICON_TASKS:
        lex = Lexicon.from_task(LEXICON_TASKS[name])
        return translation(lex.merged(lexicons[name]) if name in lexicons else lex, name)
    if name in lexicons:
        return translation(lexicons[name], name)
    known = {"none": identity, "leet": leetspeak, "piglatin": pig_latin}
    if name not in known:
        kind = Literal[tuple(list(BUILTIN_TRANSFORMS) + list(lexicons))]  # type: ignore[misc]
        check_choice("transforms", name, kind)
    return known[name]()


def parse_transforms(spec: str | Sequence[str], lexicon_names: Iterable[str] = ()) -> tuple[str, ...]:
    """Transform names from ``"none,leet,fr"`` (or a list), each checked, ``none`` first, no
    duplicates. ``lexicon_names`` are extra translation transforms the caller has lexicons for."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise InputError("transforms needs at least one name (none, leet, piglatin, fr, de)")
    allowed = Literal[tuple(list(BUILTIN_TRANSFORMS) + [n for n in lexicon_names if n not in BUILTIN_TRANSFORMS])]  # type: ignore[misc]
    for n in names:
        check_choice("transforms", n, allowed)
    if len(set(names)) != len(names):
        raise InputError(f"transforms lists a name twice: {', '.join(names)}")
    return tuple(sorted(names, key=lambda n: n != "none"))


# --------------------------------------------------------------------------------------------
# Texts to test round trips on
# --------------------------------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits + " -'.,?!_:;\n" + "éàüßÉ"


def random_texts(n: int = 200, seed: int = 0, alphabet: str = _ALPHABET, max_len: int = 40) -> list[str]:
    """``n`` seeded random strings over ``alphabet`` (letters, digits, punctuation, hyphens,
    apostrophes, a few accented letters), of length 0 to ``max_len``."""
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def task_words(tasks: Sequence[str] = ("capitalize", "english-french", "country-capital"), limit: int | None = None
               ) -> list[str]:
    """The inputs and outputs of built-in tasks (the words the probe and its lexicons use)."""
    out: list[str] = []
    for t in tasks:
        for ex in load_task(t).examples[:limit]:
            out += [ex.input, ex.output]
    return out


def sample_texts(seed: int = 0) -> list[str]:
    """What `Transform.check` tests by default: 300 built-in task words and 100 random
    strings (seeded)."""
    return task_words(limit=50) + random_texts(100, seed)
