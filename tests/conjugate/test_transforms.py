"""Transforms: round trips where they must hold, the declared lossy cases, custom transforms."""

import codecs

import pytest

from ivkit.conjugate.transforms import (
    BUILTIN_TRANSFORMS,
    TransformError,
    custom,
    from_pig_latin,
    get_transform,
    identity,
    leetspeak,
    parse_transforms,
    pig_latin,
    random_texts,
    task_words,
    to_pig_latin,
)
from ivkit.core.errors import InputError

WORDS = task_words()  # every input and output of capitalize, english-french, country-capital
RANDOM = random_texts(3000, seed=1)


@pytest.mark.parametrize("make", [identity, pig_latin])
def test_invertible_transforms_round_trip_on_task_words_and_random_text(make):
    t = make()
    assert t.invertible
    for x in WORDS + RANDOM:
        assert t.invert(t(x)) == x, x
    assert t.check(WORDS + RANDOM) == len(WORDS) + len(RANDOM)


def test_pig_latin_examples():
    assert to_pig_latin("hello") == "ello-hay"
    assert to_pig_latin("eat") == "eat-ay"
    assert to_pig_latin("HELLO World") == "ELLO-HAY orld-Way"
    assert to_pig_latin("rhythm") == "rhythm-ay"  # no vowel: nothing moves
    assert to_pig_latin("What is 7 plus 5?") == "at-Whay is-ay 7 us-play 5?"
    # text that already looks like Pig Latin still comes back
    for x in ["ello-hay", "b-ay", "a-ay-b", "-ay-", "ay ay-ay"]:
        assert from_pig_latin(to_pig_latin(x)) == x
    # the inverse of a model's output is lenient: what does not parse is kept
    assert from_pig_latin("ello-hay 12 garbage-xyz") == "hello 12 garbage-xyz"


def test_leetspeak_is_declared_lossy_and_exact_on_its_domain():
    t = leetspeak()
    assert not t.invertible and "digits" in t.note
    assert t("What is 7 plus 5?") == "Wh47 15 7 plu5 5?"
    assert t.invert(t("What is 7 plus 5?")) != "What is 7 plus 5?"  # the 7 and the 5 become letters
    assert t.invert(t("TEA")) == "tea"  # capitals A E I O S T do not come back
    domain = [x for x in WORDS + RANDOM if t.exact_on(x)]
    lower = random_texts(2000, seed=2, alphabet="abcdefghijklmnopqrstuvwxyz -.,?")
    assert len(domain) > 1000
    for x in domain + lower:
        assert t.invert(t(x)) == x, x
    assert t.check(WORDS + RANDOM + lower) == len(domain) + len(lower)


def test_translation_is_declared_not_invertible_and_counts_coverage():
    fr = get_transform("fr")
    assert not fr.invertible and fr.lexicon is not None
    out = fr("The cat zzqx")
    assert out.startswith("Le chat ")
    assert out.endswith("zzqx")  # unknown word kept
    cov = fr.coverage("The cat zzqx")
    assert (cov.words, cov.translated, cov.missing) == (3, 2, ("zzqx",))
    assert fr.check(WORDS) == 0  # nothing is claimed, nothing checked


def test_a_transform_claiming_to_invert_but_not_is_caught_by_name():
    with pytest.raises(TransformError, match=r"'half-rot'.*invertible") as e:
        custom("half-rot", lambda x: codecs.encode(x, "rot13"), lambda x: x)
    assert "s^-1" in str(e.value)
    # a correct one passes; a lossy one declared as such is accepted
    rot = custom("rot13", lambda x: codecs.encode(x, "rot13"), lambda x: codecs.encode(x, "rot13"))
    assert rot.invertible and rot.invert(rot("Hello")) == "Hello"
    lossy = custom("lower", str.lower, lambda x: x, invertible=False)
    assert not lossy.invertible
    with pytest.raises(TransformError, match="no inverse"):
        custom("x", str.lower, invertible=True)
    with pytest.raises(TransformError, match="not text"):
        custom("bad", lambda x: 3, check=False)("a")


def test_transform_names_are_checked():
    assert parse_transforms("leet,none,fr") == ("none", "leet", "fr")
    assert set(BUILTIN_TRANSFORMS) == {"none", "leet", "piglatin", "fr", "de"}
    with pytest.raises(InputError, match="did you mean 'piglatin'"):
        parse_transforms("none,piglatn")
    with pytest.raises(InputError, match="twice"):
        parse_transforms("leet,leet")
    assert parse_transforms("none,es", lexicon_names=["es"]) == ("none", "es")
