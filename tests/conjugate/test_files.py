"""Reading JSON lists and JSONL files record by record, with the line each record starts on."""

import pytest

from ivkit.conjugate.files import RecordFileError, read_records


def test_lines_of_json_list_and_jsonl(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('\n[ {"a": 1},\n\n  {"b":\n 2}, [3],\n"x" ]\n')
    assert list(read_records(p, "probe")) == [(2, {"a": 1}), (4, {"b": 2}), (5, [3]), (6, "x")]
    q = tmp_path / "a.jsonl"
    q.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert list(read_records(q, "probe")) == [(1, {"a": 1}), (3, {"b": 2})]


@pytest.mark.parametrize("name, text, match", [
    ("a.json", '[{"a": 1}\n{"b": 2}]', r"line 2: expected ',' or ']'"),
    ("a.json", '[{"a": 1}]\n[2]', r"line 2: text after the end"),
    ("a.json", '[{"a": 1},\n]', r"line 2: invalid JSON"),
    ("a.jsonl", '{"a": 1}\n{"a" 2}\n', r"line 2: invalid JSON"),
    ("a.json", "  \n", "empty"),
])
def test_malformed_files(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(RecordFileError, match=match) as e:
        list(read_records(p, "probe"))
    assert str(p) in str(e.value)
    with pytest.raises(RecordFileError, match="no such probe file"):
        list(read_records(tmp_path / "missing.json", "probe"))
