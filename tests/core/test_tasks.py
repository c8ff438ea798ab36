import json
import logging

import numpy as np
import pytest

from ivkit import PromptTemplate, Task, list_tasks, load_task
from ivkit.core.errors import AnswerTokenError, TaskError
from ivkit.core.prompts import encode_prompts, make_prompt, sample_prompts
from ivkit.core.tasks import TASK_INSTRUCTIONS, Example


def test_builtin_tasks_load_and_have_instructions():
    names = list_tasks()
    assert {"antonym", "capitalize", "country-capital"} <= set(names)
    for name in names:
        t = load_task(name)
        assert len(t) > 100 and t.instruction == TASK_INSTRUCTIONS[name]


def test_user_json_and_jsonl(tmp_path):
    recs = [{"input": f"w{i}", "output": f"W{i}"} for i in range(20)]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    a, b = load_task(tmp_path / "a.json"), load_task(str(tmp_path / "b.jsonl"), instruction="Capitalize.")
    assert a.examples == b.examples and a.name == "a" and b.instruction == "Capitalize."
    assert a.instruction is None


@pytest.mark.parametrize("content,match", [
    ("", "empty"),
    ("[]", "no examples"),
    ("{\"input\": 1}", "JSON list"),
    ("[{\"input\": \"a\", \"output\": \"b\"},", "invalid JSON at line 1"),
    ("[{\"input\": \"a\"}]", "example 0 must be an object with \"input\" and \"output\""),
    ("[{\"input\": \"a\", \"output\": [1]}]", "non-text output"),
    ("[{\"input\": \"a\", \"output\": \"  \"}]", "empty output"),
])
def test_malformed_task_files(tmp_path, content, match):
    p = tmp_path / "t.json"
    p.write_text(content)
    with pytest.raises(TaskError, match=match):
        load_task(p)


def test_jsonl_errors_name_the_line_and_bad_bytes_are_reported(tmp_path):
    good = json.dumps({"input": "a", "output": "b"})
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join([good, good, "", good, "{\"input\": \"c\",", good]))
    with pytest.raises(TaskError, match="invalid JSON at line 5,"):
        load_task(p)
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"input": "caf\u00e9", "output": "x"}]'.encode("latin-1"))
    with pytest.raises(TaskError, match="not UTF-8"):
        load_task(latin)


def test_a_folder_named_like_a_builtin_task_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "antonym").mkdir()  # e.g. ivkit extract M antonym --out antonym
    assert load_task("antonym").source.endswith("antonym.json")
    assert len(load_task("antonym")) > 1000


def test_unknown_task_name_suggests():
    with pytest.raises(TaskError, match="Did you mean country-capital"):
        load_task("country_capital")
    with pytest.raises(TaskError, match="Built-in tasks"):
        load_task("zzz-nothing")


def test_split_is_seeded_disjoint_and_70_21_9():
    t = load_task("capitalize")
    s1, s2, s3 = t.split(0), t.split(0), t.split(1)
    assert s1.train == s2.train and s1.test == s2.test
    assert s1.train != s3.train
    n = len(t)
    assert len(s1.train) == round(0.7 * n)
    assert abs(len(s1.test) - 0.21 * n) <= 1 and abs(len(s1.valid) - 0.09 * n) <= 1
    assert len(s1.train) + len(s1.valid) + len(s1.test) == n
    with pytest.raises(TaskError, match="too few"):
        Task("tiny", [Example("a", "b")] * 3).split()


def test_prompt_formats(tokenizer):
    demos = [Example("hot", "cold"), Example("up", "down")]
    q = Example("big", "small")
    fs = make_prompt(q, style="few_shot", demos=demos)
    assert fs.text == "Q: hot\nA: cold\n\nQ: up\nA: down\n\nQ: big\nA:" and fs.answer == " small"
    assert make_prompt(q, style="zero_shot").text == "Q: big\nA:"
    ins = make_prompt(q, style="instruction", instruction="Give the opposite of the word.")
    assert ins.text == "Give the opposite of the word.\n\nQ: big\nA:"
    with pytest.raises(TaskError, match="needs an instruction"):
        make_prompt(q, style="instruction")
    chat = make_prompt(q, style="chat", instruction="Opposite?", tokenizer=tokenizer)
    assert chat.text == "<|user|>Opposite?\n\nbig\n<|assistant|>" and chat.answer == "small"
    assert chat.add_special_tokens is False
    custom = PromptTemplate(query="Input: {input}\nOutput:", answer=" {output}", separator="\n")
    assert make_prompt(q, style="few_shot", demos=demos[:1], template=custom).text == \
        "Input: hot\nOutput: cold\nInput: big\nOutput:"


def test_shuffled_keeps_inputs_and_permutes_labels():
    demos = [Example(f"x{i}", f"y{i}") for i in range(10)]
    p = make_prompt(Example("q", "a"), style="shuffled", demos=demos, rng=np.random.default_rng(0))
    assert [d.input for d in p.demos] == [d.input for d in demos]
    assert sorted(d.output for d in p.demos) == sorted(d.output for d in demos)
    assert [d.output for d in p.demos] != [d.output for d in demos]
    assert p.answer == " a"


def test_sample_prompts_is_deterministic_and_excludes_query():
    split = load_task("antonym").split(0)
    a = sample_prompts(split.train, demo_pool=split.train, shots=10, n=20, seed=3)
    b = sample_prompts(split.train, demo_pool=split.train, shots=10, n=20, seed=3)
    assert [p.text for p in a] == [p.text for p in b]
    assert all(len(p.demos) == 10 and p.query not in p.demos for p in a)
    with pytest.raises(TaskError, match="at least 11"):
        sample_prompts(split.train[:5], demo_pool=split.train[:5], shots=10)


def test_answer_first_token_has_leading_space(tiny_llama):
    enc = encode_prompts(tiny_llama, [make_prompt(Example("hot", "cold"), style="zero_shot")], on_bad="raise")
    tok = tiny_llama.tokenizer
    first = tok.convert_ids_to_tokens(int(enc.first_token[0]))
    assert first.startswith("Ġ")  # the space belongs to the answer token
    assert tok.decode(enc.answer_ids[0]) == " cold"
    assert enc.input_ids[0][0] == tok.bos_token_id  # this tokenizer adds BOS, and we keep it
    assert tok.decode(enc.input_ids[0] + enc.answer_ids[0], skip_special_tokens=True) == "Q: hot\nA: cold"


def test_unusable_answers_are_reported_not_silently_dropped(tiny_llama, caplog):
    good = make_prompt(Example("hot", "cold"), style="zero_shot")
    bad = make_prompt(Example("when", "\n1999"), style="zero_shot")  # " \n1999": first token is whitespace
    with pytest.raises(AnswerTokenError, match="only whitespace"):
        encode_prompts(tiny_llama, [good, bad], on_bad="raise")
    with caplog.at_level(logging.WARNING):
        enc = encode_prompts(tiny_llama, [good, bad])
    assert len(enc) == 1 and len(enc.dropped) == 1 and "1999" in caplog.text
    with pytest.raises(AnswerTokenError, match="none of the 1 answers"):
        encode_prompts(tiny_llama, [bad])
