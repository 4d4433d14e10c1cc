"""Synthetic training sets: RAFT-style rows, filtered, split by source chunk, versioned."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragtune.errors import BadInputError, ServerUnavailableError
from training.synth import SynthConfig, latest_dataset, list_datasets, support, synthesize
from training.teachers import ChunkView, ExtractiveTeacher, find_answer_span, split_sentences


def test_split_by_chunk_holds_test_chunks_out(workspace, sample_chunks):
    version = synthesize(workspace, SynthConfig(seed=3), chunks=sample_chunks)
    splits = {s: version.rows(s) for s in ("train", "validation", "test")}
    chunk_sets = {s: {r["chunk_id"] for r in rows} for s, rows in splits.items()}
    assert all(chunk_sets.values()), version.counts
    assert not chunk_sets["train"] & chunk_sets["test"]
    assert not chunk_sets["train"] & chunk_sets["validation"]
    assert not chunk_sets["validation"] & chunk_sets["test"]
    for row in splits["test"]:
        assert {"question", "answer", "doc", "page", "messages"} <= set(row)
        assert row["doc"].endswith((".md", ".txt"))
    by_id = {c["chunk_id"]: c["text"] for c in sample_chunks}
    for row in splits["train"]:
        assert row["messages"][-1]["content"] == row["answer"]
        assert support(row["answer"], by_id[row["chunk_id"]]) >= 0.6
    questions = [r["question"] for rows in splits.values() for r in rows]
    assert len(questions) == len({q.lower() for q in questions}), "duplicates survived"
    # several paraphrased questions per fact
    per_fact = {}
    for row in splits["train"]:
        per_fact.setdefault(row["fact"], set()).add(row["question"])
    assert max(len(v) for v in per_fact.values()) >= 3
    m = version.manifest
    assert m["teacher"] == "extractive" and m["split_seed"] == 3 and m["split_by"] == "chunk"
    assert m["counts"] == {s: len(r) for s, r in splits.items()} and len(m["hash"]) == 16
    assert set(m["split_chunks"]["test"]) == chunk_sets["test"]


def test_versions_are_deterministic_and_listed(workspace, sample_chunks):
    a = synthesize(workspace, SynthConfig(seed=1), chunks=sample_chunks)
    b = synthesize(workspace, SynthConfig(seed=1), chunks=sample_chunks)
    c = synthesize(workspace, SynthConfig(seed=2), chunks=sample_chunks)
    assert (a.name, b.name, c.name) == ("v1", "v2", "v3")
    assert a.data_hash == b.data_hash != c.data_hash
    assert [v.name for v in list_datasets(workspace)] == ["v3", "v2", "v1"]
    assert latest_dataset(workspace).name == "v3"


def test_paraphrase_split_holds_out_wordings_of_trained_facts(workspace, sample_chunks):
    version = synthesize(workspace, SynthConfig(split_by="paraphrase", test_fraction=0.5), chunks=sample_chunks)
    train_facts = {r["fact"] for r in version.rows("train")}
    train_questions = {r["question"] for r in version.rows("train")}
    test = version.rows("test")
    assert test and all(r["fact"] in train_facts and r["question"] not in train_questions for r in test)


def test_raft_distractors_never_leak_held_out_text(workspace, sample_chunks):
    version = synthesize(workspace, SynthConfig(distractors=2, oracle_fraction=0.5, seed=4), chunks=sample_chunks)
    held_out = [c["text"].strip() for c in sample_chunks
                if c["chunk_id"] in set(version.manifest["split_chunks"]["test"])]
    rows = version.rows("train")
    with_oracle = 0
    for row in rows:
        prompt = row["messages"][0]["content"]
        assert row["context"] and "[1]" in prompt and prompt.endswith(row["question"])
        assert not any(text in prompt for text in held_out)
        if row["messages"][-1]["content"] != row["answer"]:  # oracle present: answer cites it
            with_oracle += 1
            n = int(row["messages"][-1]["content"].rsplit("[", 1)[1].rstrip("]"))
            assert f"[{n}]" in prompt
    assert 0 < with_oracle < len(rows)


def test_extractive_teacher_questions_quote_the_source():
    chunk = ChunkView("c1", "warranty.txt", (
        "1. STANDARD WARRANTY\n\nEvery K7 comes with a standard warranty of 24 months from the date of\n"
        "commissioning. The battery pack has a separate warranty of 5 years.\n\n"
        "- Orders above EUR 250 need pre-approval from your department head.\n"
        "- Error code E-214 means lidar occlusion.\n"))
    facts = ExtractiveTeacher().facts(chunk, questions_per_fact=3, max_facts=6)
    answers = [f.answer for f in facts]
    assert "Every K7 comes with a standard warranty of 24 months from the date of commissioning." in answers
    for f in facts:
        assert f.answer in " ".join(split_sentences(chunk.text))
        assert 1 <= len(f.questions) <= 3 and all(q.endswith("?") for q in f.questions)
    warranty = next(f for f in facts if "24 months" in f.answer)
    assert any("how many months" in q for q in warranty.questions)
    assert find_answer_span("Orders above EUR 250 need approval.")[2] == "how much"
    assert find_answer_span("Error code E-214 means lidar occlusion.")[2] == "which code"


def test_no_chunks_means_ingest_first(workspace):
    with pytest.raises(BadInputError, match="ingest documents first"):
        synthesize(workspace, SynthConfig(), chunks=[])


class _Teacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint on loopback that fails once, then answers in RAFT JSON."""
    calls = 0
    lock = threading.Lock()

    def do_POST(self):
        with self.lock:  # two workers call at once: count each request exactly once
            type(self).calls += 1
            first_call = type(self).calls == 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if first_call:
            self.send_response(500)
            self.end_headers()
            return
        passage = body["messages"][1]["content"].split("<<<\n", 1)[1].split("\n>>>", 1)[0]
        first = split_sentences(passage)[0]
        reply = json.dumps([
            {"questions": [f"Tell me about {first[:30]}?", f"What do we know about {first[:20]}?"],
             "answer": first, "quote": first},
            {"questions": ["What is the airspeed of an unladen swallow?"],
             "answer": "Roughly 11 metres per second for a European swallow.", "quote": "n/a"},
        ])
        content = f"Here you go:\n```json\n{reply}\n```"
        out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_openai_compatible_teacher_with_retry_and_support_filter(workspace, sample_chunks):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        chunks = sample_chunks[:6]
        seen = []
        config = SynthConfig(teacher="openai", teacher_url=url, teacher_model="big-teacher", workers=2,
                             requests_per_minute=6000, max_retries=2)
        version = synthesize(workspace, config, lambda i, n, doc: seen.append((i, n)), chunks=chunks)
    finally:
        server.shutdown()
    assert _Teacher.calls == len(chunks) + 1  # one retry after the 500
    assert seen[-1] == (len(chunks), len(chunks))
    assert version.teacher == f"openai:big-teacher@{url}"
    assert "teacher_api_key" not in version.manifest["config"]
    assert version.manifest["dropped"]["unsupported"] == len(chunks)  # the swallow answers
    rows = version.rows("train") + version.rows("validation") + version.rows("test")
    assert rows and not any("swallow" in r["question"] for r in rows)


def test_dead_teacher_fails_clearly(workspace, sample_chunks):
    config = SynthConfig(teacher="openai", teacher_url="http://127.0.0.1:9/v1", teacher_model="m", max_retries=1)
    with pytest.raises(ServerUnavailableError, match="did not answer after 2 tries"):
        synthesize(workspace, config, chunks=sample_chunks[:2])
    assert list_datasets(workspace) == []
