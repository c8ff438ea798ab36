"""Lexicons: built from the built-in tasks or users' files; errors name the file and the line."""

import json

import pytest

from ivkit.conjugate.files import RecordFileError
from ivkit.conjugate.lexicon import Lexicon, LexiconError, match_case
from ivkit.core.tasks import load_task


def test_builtin_lexicons_and_case():
    fr = Lexicon.from_task("english-french")
    assert len(fr) == len(load_task("english-french")) - fr.skipped
    assert fr.pairs["the"] == "le"  # "le/la/les": the first alternative
    text, cov = fr.translate("The CAT, the Cat and a zzqx.")
    assert text.startswith("Le CHAT, le Chat et ")
    assert (cov.words, cov.translated) == (7, 5) and cov.missing == ("a", "zzqx")
    assert match_case("I", "je") == "JE" and match_case("Word", "MOT") == "Mot" and match_case("w", "Mot") == "mot"
    de = Lexicon.from_task("english-german")
    assert de.translate("capital")[0] == "hauptstadt"


def test_translation_commutes_with_upper_and_lower_case():
    fr = Lexicon.from_task("english-french")
    for ex in load_task("capitalize").examples[:300]:
        x = f"{ex.output} of {ex.input} A"
        assert fr.translate(x.upper())[0] == fr.translate(x)[0].upper()
        assert fr.translate(x.lower())[0] == fr.translate(x)[0].lower()


def test_user_file_merged(tmp_path):
    p = tmp_path / "extra.jsonl"
    p.write_text('{"input": "is", "output": "est"}\n\n["of", "de"]\n{"input": "ice cream", "output": "glace"}\n')
    extra = Lexicon.from_file(p)
    assert extra.pairs == {"is": "est", "of": "de"} and extra.skipped == 1
    both = Lexicon.from_task("english-french").merged(extra)
    assert both.translate("What is 7 plus 5?")[0] == "Quoi est 7 plus 5?"


def test_duplicate_keys_name_the_file_and_both_lines(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"input": "cat", "output": "chat"}\n{"input": "dog", "output": "chien"}\n'
                 '{"input": "Cat", "output": "matou"}\n')
    with pytest.raises(LexiconError, match=r"dup\.jsonl, line 3: duplicate key 'Cat' \(first at line 1\)"):
        Lexicon.from_file(p)
    q = tmp_path / "dup.json"  # a JSON list: each element's line is where it starts
    q.write_text(json.dumps([{"input": "cat", "output": "chat"}, {"input": "dog", "output": "chien"},
                             {"input": "cat", "output": "matou"}], indent=1))
    with pytest.raises(LexiconError, match=r"dup\.json, line 10: duplicate key 'cat' \(first at line 2\)"):
        Lexicon.from_file(q)


@pytest.mark.parametrize("content, match", [
    ("", "empty"),
    ("[]", "no usable entry|no entries"),
    ('[{"input": "ice cream", "output": "glace"}]', "no usable entry"),
    ('[{"input": "cat"}]', r"line 1: a lexicon entry must be"),
    ('[\n{"input": "cat", "output": "chat"},\n{"input": "", "output": "x"}\n]', r"line 3: the word and its"),
    ('[\n{"input": "cat", "output": "chat"},\n{"input": "dog" "output": "x"}\n]', r"line 3: invalid JSON"),
    ('{"cat": "chat"}', "must be a JSON list"),
])
def test_bad_lexicon_files(tmp_path, content, match):
    p = tmp_path / "lex.json"
    p.write_text(content)
    with pytest.raises((LexiconError, RecordFileError), match=match) as e:
        Lexicon.from_file(p)
    assert str(p) in str(e.value)


def test_empty_lexicon_in_code():
    with pytest.raises(LexiconError, match="no entries"):
        Lexicon("mine", {})
