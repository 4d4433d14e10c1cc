"""Training files people bring: every bad row is reported by line number and skipped."""

from __future__ import annotations

import json

import pytest

from ragtune.errors import BadInputError
from training.chat_data import load_chat_file, load_chat_file_strict
from training.dataset_store import import_chat_file


def test_chat_and_qa_jsonl_rows_with_errors_by_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}),
        "",
        json.dumps({"question": "What is 2+2?", "answer": "4"}),
        '{"question": "broken", "answer": ',
        json.dumps({"messages": [{"role": "user", "content": "No answer"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"question": "  ", "answer": "empty question"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"text": "no known fields"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    rows, errors = load_chat_file(path)
    assert [r["messages"][-1]["content"] for r in rows] == ["Hello.", "4"]
    assert rows[1]["messages"][0] == {"role": "user", "content": "What is 2+2?"}
    by_line = dict(errors)
    assert sorted(by_line) == [4, 5, 6, 7, 8, 9]
    assert "invalid JSON" in by_line[4]
    assert "last message must be the assistant" in by_line[5]
    assert "robot" in by_line[6]
    assert "question" in by_line[7]
    assert "object" in by_line[8]


def test_repo_malformed_file_is_reported_not_used(repo_bad_files):
    rows, errors = load_chat_file(repo_bad_files / "malformed.jsonl")
    lines = [n for n, _ in errors]
    assert lines, "malformed.jsonl must produce errors"
    # every good row is a complete pair; no bad row slipped through
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"].strip()
    total = sum(1 for line in (repo_bad_files / "malformed.jsonl").read_text().splitlines() if line.strip())
    assert len(rows) + len(errors) == total


def test_csv_rows_and_errors(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('Question,Answer\n"What is the lead time?","9 weeks."\n,"no question"\n'
                    '"Multi\nline?","Yes, it works."\n"a","b","extra"\n')
    rows, errors = load_chat_file(path)
    assert [r["messages"][0]["content"] for r in rows] == ["What is the lead time?", "Multi\nline?"]
    assert [n for n, _ in errors] == [3, 6]


@pytest.mark.parametrize("name,content,needle", [
    ("qa.csv", "prompt_text,reply\nx,y\n", "'question' and 'answer' columns"),
    ("data.parquet", "PAR1", "unsupported training file type"),
    ("latin1.jsonl", None, "not UTF-8"),
])
def test_unusable_files_fail_clearly(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is None:
        path.write_bytes('{"question": "caf\xe9?", "answer": "ok"}\n'.encode("latin-1"))
    else:
        path.write_text(content)
    with pytest.raises(BadInputError, match=needle):
        load_chat_file(path)


def test_file_without_any_good_row_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"oops": 1}\nnot json\n')
    with pytest.raises(BadInputError, match=r"no usable training rows: line 1: .*line 2: invalid JSON"):
        load_chat_file_strict(path)
    with pytest.raises(BadInputError, match="does not exist"):
        load_chat_file(tmp_path / "missing.jsonl")


def test_import_upload_as_dataset_version(workspace, tmp_path):
    path = tmp_path / "upload.jsonl"
    rows = [{"question": f"Question number {i}?", "answer": f"Answer {i}."} for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    version, errors = import_chat_file(workspace, path, validation_fraction=0.1, test_fraction=0.2)
    assert errors == [(31, errors[0][1])]
    assert version.name == "v1" and version.manifest["source"] == "upload"
    assert version.counts == {"train": 21, "validation": 3, "test": 6}
    test_questions = {r["question"] for r in version.rows("test")}
    train_questions = {r["messages"][0]["content"] for r in version.rows("train")}
    assert not test_questions & train_questions
    assert all({"question", "answer", "doc", "page"} <= set(r) for r in version.rows("test"))
