"""The probe: items from a seed, users' files (errors name file and line), rendering under every
transform, and the scoring on hand-written outputs."""

import json

import pytest

from ivkit.conjugate.files import RecordFileError
from ivkit.conjugate.probe import (
    IN_CONTEXT_TASKS,
    build_probe,
    decode_new,
    load_probe_file,
    make_queries,
    render,
    run_probe,
    score_output,
)
from ivkit.conjugate.transforms import get_transform, identity, leetspeak, pig_latin
from ivkit.core.errors import InputError

# ---- scoring on hand-written outputs ---------------------------------------------------------

ANSWER = "What is 7 plus 5?"


@pytest.mark.parametrize("output, exhausted, want", [
    (" What is 7 plus 5?", False, "in_context"),              # the in-context answer, leading space stripped
    ("What is 7 plus 5? 12", False, "in_context"),            # starts with it: what follows does not matter
    (" What is 7 plus 5.", False, "in_context"),              # the final mark is not compared
    (" What is 7 plus 5", False, "in_context"),
    (" 12", False, "instruction"),                            # the instruction's answer
    (" The answer is 12.", False, "instruction"),             # ... anywhere, as a whole word
    (" 7 + 5 = 12", False, "instruction"),
    (" 120", False, "neither"),                               # 12 is not a whole word here
    (" what is 7 plus 5?", False, "neither"),                 # case-sensitive
    (" What is 7", False, "neither"),                         # stopped early (newline/EOS): not the answer
    (" What is 7 plus", True, "in_context"),                  # the 10-token budget cut a matching output
    (" What is 8", True, "neither"),                          # budget cut, but it does not match
    ("   ", True, "neither"),                                 # nothing but whitespace
    ("", False, "neither"),
])
def test_scoring_on_hand_written_outputs(output, exhausted, want):
    assert score_output(output, ANSWER, ["12"], exhausted=exhausted) == want


def test_exact_and_core():
    from ivkit.conjugate.probe import answer_core, exact_match

    assert answer_core(" What is 7 plus 5? ") == "What is 7 plus 5" and answer_core("?!") == "?!"
    assert answer_core("The capital of Peru is ___.") == "The capital of Peru is ___"
    assert exact_match(" What is 7 plus 5?", ANSWER) and not exact_match(" What is 7 plus 5.", ANSWER)


def test_scoring_of_transformed_answers():
    item = build_probe(["uppercase"], n=1)[0]
    r = render(item, leetspeak())
    assert score_output(" " + r.answer, r.answer, r.instruction_answers) == "in_context"
    assert score_output(" " + item.answer, r.answer, r.instruction_answers) == "neither"  # not in Leetspeak
    assert score_output(" " + item.instruction_answers[0], r.answer, r.instruction_answers) == "instruction"
    with pytest.raises(InputError):
        score_output("x", "  ", [])


def test_decode_new_cuts_at_eos_and_newline(tiny_llama):
    tok = tiny_llama.tokenizer
    ids = tok("Q: cold\nA: hot", add_special_tokens=False)["input_ids"]
    text, exhausted = decode_new(tiny_llama, ids)
    assert text == "Q: cold" and not exhausted
    text, exhausted = decode_new(tiny_llama, tok(" hot", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    assert text == " hot" and not exhausted
    assert decode_new(tiny_llama, tok(" hot cold", add_special_tokens=False)["input_ids"]) == (" hot cold", True)


# ---- items -------------------------------------------------------------------------------------


def test_build_probe_is_seeded_and_paired_across_tasks():
    a, b = build_probe(n=100, seed=3), build_probe(n=100, seed=3)
    assert a == b and len(a) == 300
    assert a != build_probe(n=100, seed=4)
    by_task = {t: [it for it in a if it.task == t] for t in IN_CONTEXT_TASKS}
    assert [it.query for it in by_task["repeat"]] == [it.query for it in by_task["uppercase"]]
    kinds = [it.kind for it in by_task["repeat"]]
    assert kinds.count("arithmetic") == kinds.count("fill_blank") == 50
    for it in a:
        assert it.answer == IN_CONTEXT_TASKS[it.task](it.query) and len(it.demos) == 2
        assert all(y == IN_CONTEXT_TASKS[it.task](x) for x, y in it.demos)
        ans = it.instruction_answers[0]
        assert ans.lower() not in it.query.lower().replace("?", " ").replace(".", " ").split()


def test_arithmetic_answers_are_right():
    for kind, q, (ans,) in make_queries(200, seed=1, kinds="arithmetic"):
        _, _, a, op, b = q.rstrip("?").split()
        assert int(ans) == {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]


@pytest.mark.parametrize("name", ["none", "leet", "piglatin", "fr", "de"])
def test_every_builtin_transform_keeps_the_task(name):
    """s(task(x)) == task(s(x)) on every field of every item: the transformed prompt asks for
    the same in-context task; the answer is transformed like the prompt."""
    t = get_transform(name)
    for it in build_probe(n=100, seed=0):
        r = render(it, t)
        assert r.same_task, (name, it)
        assert r.answer == t(it.answer) and r.prompt.text.endswith(f"Q: {t(it.query)}\nA:")
        assert (r.coverage is None) == (t.lexicon is None)


def test_render_catches_a_false_inverse_on_the_items():
    from ivkit.conjugate.transforms import Transform, TransformError

    liar = Transform("liar", str.swapcase, str.lower, invertible=True)  # built directly: no check at birth
    with pytest.raises(TransformError, match="'liar'"):
        render(build_probe(n=1)[0], liar)


# ---- users' probe files ------------------------------------------------------------------------


def _write(tmp_path, lines, name="probe.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return p


def test_probe_file(tmp_path):
    p = _write(tmp_path, [
        {"task": "repeat", "demos": ["The cat sleeps.", "Dogs bark."], "query": "What is 7 plus 5?",
         "instruction_answer": "12"},
        {"task": "reverse", "demos": [["a b", "b a"], {"input": "c d", "output": "d c"}], "query": "What is 2 plus 3?",
         "answer": "3? plus 2 is What", "instruction_answer": ["5", "five"], "kind": "arithmetic"},
    ])
    items = load_probe_file(p)
    assert items[0].demos == (("The cat sleeps.", "The cat sleeps."), ("Dogs bark.", "Dogs bark."))
    assert items[0].answer == "What is 7 plus 5?" and items[0].instruction_answers == ("12",)
    assert items[1].task == "reverse" and items[1].index == 0 and items[1].instruction_answers == ("5", "five")
    assert render(items[1], pig_latin()).same_task is None  # a task of the file's own: not checkable


@pytest.mark.parametrize("bad, match", [
    ({"task": "reverse", "demos": [["a b", "b a"]], "query": "What is 2 plus 3?"},
     r"line 2: the query 'What is 2 plus 3\?' has no in-context answer"),
    ({"demos": [["a", "a"]], "query": "Q?"}, r"line 2: .*no in-context answer"),
    ({"task": "repeat", "demos": [["a", "a"]]}, r"line 2: the item has no \"query\""),
    ({"task": "repeat", "demos": [], "query": "Q?"}, r"line 2: \"demos\" must be a non-empty list"),
    ({"task": "custom", "demos": ["a"], "query": "Q?", "answer": "Q?"}, r"line 2: demonstration 'a' must be"),
    ({"task": "repeat", "demos": ["a"], "query": "Q?", "answer": "X"}, r"line 2: \"answer\" 'X' is not what"),
    ({"task": "repeat", "demos": ["a"], "query": "Q?", "instruction_anwser": "1"}, r"line 2: unknown key"),
    ("[1, 2]", r"line 2: each probe item must be an object"),
    ('{"task": "repeat",', r"line 2: invalid JSON"),
])
def test_bad_probe_files_name_the_file_and_line(tmp_path, bad, match):
    good = {"task": "repeat", "demos": ["a"], "query": "Q?"}
    p = _write(tmp_path, [good, bad])
    with pytest.raises(RecordFileError, match=match) as e:
        load_probe_file(p)
    assert str(p) in str(e.value)


def test_probe_file_json_list_lines(tmp_path):
    p = tmp_path / "probe.json"
    p.write_text('[\n  {"task": "repeat", "demos": ["a"], "query": "Q?"},\n\n  {"task": "x", "demos": [["a", "b"]],'
                 ' "query": "Q?"}\n]\n')
    with pytest.raises(RecordFileError, match=r"probe\.json, line 4: the query 'Q\?' has no in-context answer"):
        load_probe_file(p)
    with pytest.raises(RecordFileError, match="empty"):
        (tmp_path / "e.jsonl").write_text("\n")
        load_probe_file(tmp_path / "e.jsonl")


# ---- running -----------------------------------------------------------------------------------


def test_run_probe_on_a_tiny_model(tiny_llama):
    items = build_probe(["repeat"], n=4)
    run = run_probe(tiny_llama, items, identity(), progress=False, max_new_tokens=3)
    assert len(run.records) == 4 and {r.outcome for r in run.records} <= {"in_context", "instruction", "neither"}
    again = run_probe(tiny_llama, items, identity(), progress=False, max_new_tokens=3, batch_size=1)
    assert [r.output for r in again.records] == [r.output for r in run.records]
    assert [r.index for r in run.records] == [0, 1, 2, 3]  # the input order, whatever the batching
    from ivkit.conjugate.probe import ProbeRun

    assert ProbeRun.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    assert "in-context" in repr(run) and len(run.to_pandas()) == 4


@pytest.mark.slow
def test_cached_engine_matches_generate_ids_on_smollm2(smollm2):
    """On a real model too, the KV-cached engine decodes the probe as ivkit's generate_ids does."""
    items = build_probe(["repeat", "uppercase"], n=2, seed=0)
    ref = run_probe(smollm2, items, leetspeak(), engine="generate_ids", progress=False)
    fast = run_probe(smollm2, items, leetspeak(), engine="cached", progress=False)
    assert [r.new_ids for r in fast.records] == [r.new_ids for r in ref.records]
    assert [r.outcome for r in fast.records] == [r.outcome for r in ref.records]
    assert all(len(r.new_ids) == 10 for r in ref.records)
