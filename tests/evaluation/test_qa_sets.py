"""Test sets: JSONL, CSV, typed rows; bad rows reported by line and left out."""

import json

import pytest

from evaluation.metrics import answer_metrics, citation_accuracy, gold_sources, hit_at_k
from evaluation.qa_sets import load_qa_file, rows_from_text
from evaluation.runner import score_answer
from ragtune.errors import BadInputError
from retrieval.evaluate import load_qa


def test_malformed_jsonl_reports_lines(sample_qa):
    rows, errors = load_qa_file(sample_qa.parent / "bad_files" / "malformed.jsonl")
    assert [line for line, _ in errors] == [3, 5]
    assert "JSON" in errors[0][1] and "question" in errors[1][1]
    assert len(rows) == 4 and all(r["question"] and r["answer"] for r in rows)


def test_sample_qa_keeps_gold_sources(sample_qa):
    rows, errors = load_qa_file(sample_qa)
    assert len(rows) == 40 and not errors
    assert rows[0]["doc"] == "product_manual_k7.pdf" and rows[0]["page"] == 1


def test_truth_with_cited_page_is_parsed(shared_corpora):
    rows, _ = load_qa_file(shared_corpora / "contoso-benefits" / "qa" / "ground_truth.jsonl")
    first = rows[0]
    assert first["doc"] == "Northwind_Standard_Benefits_Details.pdf" and first["page"] == 7
    assert "[" not in first["answer"]


def test_csv_and_bad_cells(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer,doc,page\n"How long is the warranty?","24 months",warranty.txt,\n'
                    'What colour?,,x.md,\nWhich page?,Page two,m.pdf,two\nExtra cells?,yes,a.md,1,surplus\n',
                    encoding="utf-8")
    rows, errors = load_qa_file(path)
    assert rows == [{"question": "How long is the warranty?", "answer": "24 months", "doc": "warranty.txt"}]
    assert [line for line, _ in errors] == [3, 4, 5]


def test_unusable_files(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_qa_file(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(BadInputError, match="no usable"):
        load_qa_file(empty)
    wrong = tmp_path / "qa.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(BadInputError, match="header"):
        load_qa_file(wrong)
    binary = tmp_path / "qa.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(BadInputError, match="UTF-8"):
        load_qa_file(binary)


def test_typed_questions():
    rows, errors = rows_from_text("What is X? | X is 5 | x.md | 2\n\nno answer here\n")
    assert rows == [{"question": "What is X?", "answer": "X is 5", "doc": "x.md", "page": 2}]
    assert errors[0][0] == 3


def test_several_gold_documents_in_one_row(tmp_path):
    path = tmp_path / "multi.jsonl"
    path.write_text(json.dumps({"question": "Which plans cover eye exams?", "answer": "Both plans.",
                                "doc": ["standard.pdf", "plus.pdf#page=4"], "page": 2}) + "\n", encoding="utf-8")
    rows, errors = load_qa_file(path)
    assert not errors
    row = rows[0]
    assert gold_sources(row) == [("standard.pdf", 2), ("plus.pdf", 4)]
    # eval-retrieval reads the very same row the same way
    assert load_qa(path)[0]["gold"] == [("standard.pdf", 2), ("plus.pdf", 4)]
    second = [{"doc": "other.pdf", "page": 1}, {"doc": "plus.pdf", "page": 4}]
    assert hit_at_k(second, gold_sources(row), k=2) == 1.0 and hit_at_k(second, gold_sources(row), k=1) == 0.0
    assert citation_accuracy(second, gold_sources(row)) == 0.5
    assert hit_at_k([{"doc": "plus.pdf", "page": 2}], gold_sources(row)) == 0.0  # plus.pdf is gold on page 4 only


def test_unreadable_gold_document_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q1", "answer": "a", "doc": "a.pdf"}) + "\n"
                    + json.dumps({"question": "q2", "answer": "b", "doc": ["a.pdf", 7]}) + "\n", encoding="utf-8")
    for load in (load_qa_file, load_qa):
        with pytest.raises(BadInputError, match="line 2"):
            load(path)
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("question,answer,doc\nq1,a,\"['a.pdf', 'b.pdf']\"\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="line 2.*JSON list"):
        load_qa_file(csv_path)
    csv_path.write_text('question,answer,doc\nq1,a,"[""a.pdf"", ""b.pdf""]"\n', encoding="utf-8")
    assert load_qa_file(csv_path)[0][0]["gold"] == [{"doc": "a.pdf", "page": None}, {"doc": "b.pdf", "page": None}]


def test_several_acceptable_answers_are_kept_and_each_metric_takes_the_best(tmp_path):
    path = tmp_path / "squad.jsonl"
    rows = [{"question": "Why do you collect my data?", "answers": ["", {"text": "to send you newsletters"},
                                                                   "improve our services", "to send you newsletters"]},
            {"question": "How long are logs kept?", "answers": ["90 days [logs.txt]", "three months"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    loaded, problems = load_qa_file(path)
    assert problems == []
    assert loaded[0]["answer"] == "to send you newsletters"
    assert loaded[0]["answers"] == ["to send you newsletters", "improve our services"]  # blanks and repeats left out
    assert loaded[1]["answers"] == ["90 days", "three months"] and loaded[1]["doc"] == "logs.txt"
    # An answer that gives the second acceptable answer scores as if it were the only one.
    said = {"text": "We use it to improve our services."}
    m = answer_metrics(said, loaded[0], uses_passages=False)
    assert m["token_f1"] == answer_metrics(said, {"answer": "improve our services"}, uses_passages=False)["token_f1"]
    assert m["token_f1"] > answer_metrics(said, {"answer": loaded[0]["answer"]}, uses_passages=False)["token_f1"]
    assert answer_metrics({"text": "Three months."}, loaded[1], uses_passages=False)["exact_match"] == 1.0
    # fact hit applies through the reference that has a value; the one without is left out
    assert answer_metrics({"text": "For 90 days."}, loaded[1], uses_passages=False)["fact_hit"] == 1.0
    assert answer_metrics({"text": "For 30 days."}, loaded[1], uses_passages=False)["fact_hit"] == 0.0
    sims = score_answer({"text": "We use it to improve our services."}, loaded[0], "base")["semantic_similarity"]
    alone = score_answer({"text": "We use it to improve our services."}, {"answer": "improve our services"}, "base")
    assert sims == pytest.approx(alone["semantic_similarity"])
