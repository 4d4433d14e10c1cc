"""Ingestion batches, dedup, incremental add/remove, atomic index on disk that reloads exactly, prompt builder."""

from __future__ import annotations

import shutil

import faiss
import pytest

from ragtune.errors import BadInputError
from ragtune.paths import repo_datasets_dir
from retrieval.documents import all_chunks, delete_document, document_chunks, list_documents
from retrieval.index import build_index, index_dir
from retrieval.ingest import IngestLimits, ingest_paths
from retrieval.prompt import build_rag_messages
from retrieval.search import Passage, Retriever


def test_batch_goes_on_past_bad_files(workspace, sample_docs, tmp_path):
    bad = repo_datasets_dir() / "bad_files"
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 300_000)  # 1.5 MB
    results = ingest_paths(workspace, [bad / "corrupt.pdf", sample_docs / "faq.md", bad / "empty.txt",
                                       bad / "encrypted_with_password.pdf", bad / "not_really.pdf", huge,
                                       tmp_path / "missing.md", bad / "encrypted_no_user_password.pdf"],
                           limits=IngestLimits(max_file_mb=1))
    status = {r.name: (r.status, r.reason or "") for r in results}
    assert status["faq.md"][0] == "added"
    assert status["encrypted_no_user_password.pdf"][0] == "added"
    for name, word in [("corrupt.pdf", "damaged"), ("empty.txt", "empty"), ("encrypted_with_password.pdf", "password"),
                       ("not_really.pdf", "not a PDF"), ("huge.txt", "limit of 1 MB"), ("missing.md", "no such file")]:
        assert status[name][0] == "failed" and word in status[name][1], (name, status[name])
    assert [d["name"] for d in list_documents(workspace)] == ["faq.md", "encrypted_no_user_password.pdf"]


def test_same_content_is_stored_once_and_new_versions_replace(workspace, sample_docs, tmp_path):
    copy = tmp_path / "faq_copy.md"
    shutil.copy(sample_docs / "faq.md", copy)
    first, again, renamed = ingest_paths(workspace, [sample_docs / "faq.md", sample_docs / "faq.md", copy])
    assert first.status == "added" and first.chunks > 0
    assert again.status == again.status == "duplicate" and renamed.status == "duplicate"
    assert renamed.doc_id == first.doc_id and "faq.md" in renamed.reason
    edited = tmp_path / "faq.md"
    edited.write_text((sample_docs / "faq.md").read_text() + "\n\nNew answer: the K9 ships in 2027.\n")
    (update,) = ingest_paths(workspace, [edited])
    assert update.status == "added" and "replaced" in update.reason
    docs = list_documents(workspace)
    assert len(docs) == 1 and docs[0]["doc_id"] == update.doc_id
    assert any("K9 ships" in c.text for c in document_chunks(workspace, "faq.md"))


def test_chunks_carry_document_page_and_section(sample_index):
    chunks = all_chunks(sample_index)
    manual = [c for c in chunks if c.doc == "product_manual_k7.pdf"]
    assert {c.page for c in manual} == {1, 2, 3, 4, 5}
    handbook = [c for c in chunks if c.doc == "employee_handbook.md"]
    assert all(c.page is None for c in handbook) and all(c.section for c in handbook[1:])
    assert all(c.tokens > 0 and c.doc_id for c in chunks)


def test_retrieve_cites_the_right_page(sample_index):
    retriever = Retriever.for_workspace(sample_index)
    for mode in ("hybrid", "dense", "bm25"):
        passages = retriever.retrieve("What does error code E-214 mean on the K7?", k=3, mode=mode)
        assert len(passages) == 3 and all(isinstance(p, Passage) for p in passages)
        assert "product_manual_k7.pdf#page=3" in [p.citation for p in passages], mode
    top = retriever.retrieve("How many vacation days do employees get?", k=1)[0]
    assert top.citation == "employee_handbook.md" and "27" in top.text
    with pytest.raises(BadInputError, match="Unknown retrieval mode"):
        retriever.retrieve("x", mode="magic")


def test_no_index_is_a_clear_error(workspace):
    with pytest.raises(BadInputError, match="ragtune index"):
        Retriever.for_workspace(workspace)


def test_incremental_add_and_remove(workspace, sample_docs):
    ingest_paths(workspace, [sample_docs / "faq.md", sample_docs / "warranty_and_support.txt"])
    first = build_index(workspace, progress=False)
    assert first["embedded"] == first["chunks"] > 0 and first["kind"] == "flat"
    assert build_index(workspace, progress=False)["version"] == first["version"]  # nothing changed

    (added,) = ingest_paths(workspace, [sample_docs / "product_manual_k7.pdf"])
    second = build_index(workspace, progress=False)
    assert second["version"] != first["version"]
    assert second["embedded"] == added.chunks  # only the new document was embedded
    retriever = Retriever.for_workspace(workspace)
    assert retriever.version == second["version"]
    assert retriever.retrieve("error code E-214", k=1)[0].doc == "product_manual_k7.pdf"

    delete_document(workspace, "product_manual_k7.pdf")
    third = build_index(workspace, progress=False)
    assert third["embedded"] == 0 and third["chunks"] == first["chunks"]
    after = Retriever.for_workspace(workspace)
    assert after.version == third["version"] != second["version"]
    assert all(p.doc != "product_manual_k7.pdf" for p in after.retrieve("error code E-214", k=10))
    with pytest.raises(BadInputError, match="No document"):
        delete_document(workspace, "product_manual_k7.pdf")


def test_changing_chunk_settings_rechunks_without_reparsing(workspace, sample_docs):
    from retrieval.settings import save_settings

    ingest_paths(workspace, [sample_docs / "employee_handbook.md"])
    before = build_index(workspace, progress=False)
    save_settings(workspace, chunk_tokens=64, overlap_tokens=8)
    after = build_index(workspace, progress=False)
    assert after["chunks"] > before["chunks"] and after["version"] != before["version"]
    assert max(c.tokens for c in all_chunks(workspace)) <= 64


def test_index_on_disk_reloads_exactly(sample_index, tmp_path):
    folder = index_dir(sample_index)
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    first = Retriever.for_workspace(sample_index)
    assert faiss.read_index(str(folder / "dense.faiss")).ntotal == len(first.chunks) == len(all_chunks(sample_index))
    # A fresh process-independent load (bypassing the cache) gives identical rankings and scores.
    again = Retriever(folder, first.manifest, first.settings)
    for q in ("per diem in Rotterdam", "lidar window part number", "anchor day"):
        a = [(p.chunk_id, round(p.score, 6)) for p in first.retrieve(q, k=5)]
        b = [(p.chunk_id, round(p.score, 6)) for p in again.retrieve(q, k=5)]
        assert a == b


def test_hnsw_past_the_exact_limit(workspace, sample_docs):
    from retrieval.settings import save_settings

    ingest_paths(workspace, [sample_docs])
    save_settings(workspace, exact_limit=10)
    built = build_index(workspace, progress=False)
    assert built["kind"] == "hnsw"
    retriever = Retriever.for_workspace(workspace)
    assert retriever.kind == "hnsw"
    vectors = retriever.dense.reconstruct_n(0, retriever.dense.ntotal)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    for q in ("error code E-214", "per diem in Rotterdam", "password length"):
        query = retriever.embedder.encode([q])
        want = exact.search(query, 5)[1][0].tolist()
        got = [i for i, _ in retriever.dense_search(q, 5)]
        assert got == want  # on a small index HNSW finds the exact neighbours


def _p(n, text, page=None, section=None):
    return Passage(f"c{n}", f"doc{n}.pdf" if page else f"doc{n}.md", page, section, text, 1.0 / n)


def test_prompt_numbers_passages_within_budget():
    passages = [_p(1, "The K7 carries 1,450 kg.", 1, "Specs"), _p(2, "word " * 400), _p(3, "Charging takes 2 hours.", 2)]
    count = lambda s: len(s.split())  # noqa: E731
    messages, used = build_rag_messages("What is the payload?", passages, count_tokens=count, max_context_tokens=120,
                                        history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert [p.chunk_id for p in used] == ["c1", "c3"]  # the long passage does not fit and is skipped
    user = messages[-1]["content"]
    assert "[1] doc1.pdf, page 1:" in user and "[2] doc3.pdf, page 2:" in user and "word word" not in user
    assert user.rstrip().endswith("Question: What is the payload?")
    assert messages[0]["role"] == "system" and [m["role"] for m in messages[1:3]] == ["user", "assistant"]
    assert messages[1]["content"] == "hi"  # no fixed worked example before the conversation
    context = user.split("Question:")[0]
    assert count(context) <= 120 + 5


def test_prompt_cuts_the_best_passage_when_nothing_fits():
    messages, used = build_rag_messages("q?", [_p(1, "long " * 1000)], max_context_tokens=50)
    assert len(used) == 1 and len(messages[-1]["content"]) < 1000


def test_machine_wide_cache_spares_a_second_workspace(workspace, sample_docs, tmp_path):
    from ragtune.workspace import Workspace

    ingest_paths(workspace, [sample_docs / "warranty_and_support.txt"])
    first = build_index(workspace, progress=False)
    other = Workspace.create("copy", root=tmp_path / "elsewhere")
    ingest_paths(other, [sample_docs / "warranty_and_support.txt"])
    second = build_index(other, progress=False)
    assert second["embedded"] == second["chunks"] == first["chunks"]  # new to that workspace...
    assert second["computed"] == 0  # ...but nothing ran through the model again
    a = Retriever.for_workspace(workspace).retrieve("RMA process", k=3)
    b = Retriever.for_workspace(other).retrieve("RMA process", k=3)
    assert [(p.chunk_id, round(p.score, 6)) for p in a] == [(p.chunk_id, round(p.score, 6)) for p in b]


def test_cross_encoder_reranking_orders_by_its_scores(sample_index, tmp_path):
    """A tiny random cross-encoder stands in for a real one: the wiring, not its quality, is under test."""
    import shutil as sh

    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    from ragtune.models import resolve_embedder

    minilm = resolve_embedder().path
    folder = tmp_path / "tiny-cross-encoder"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        sh.copy(minilm / name, folder / name)
    retriever = Retriever.for_workspace(sample_index, reranker=str(folder))
    passages = retriever.retrieve("How long is the K7 warranty?", k=5)
    assert len(passages) == 5 and all("rerank" in p.ranks for p in passages)
    assert [p.ranks["rerank"] for p in passages] == [1, 2, 3, 4, 5]
    expected = CrossEncoder(str(folder), device="cpu").predict([("How long is the K7 warranty?", p.text) for p in passages])
    assert list(expected) == sorted(expected, reverse=True)  # returned in the cross-encoder's order
