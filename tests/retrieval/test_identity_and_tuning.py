"""Same-template documents told apart, fragments merged, running headers dropped, fusion tuned per corpus."""

from __future__ import annotations

import pytest

from retrieval.chunking import ChunkingConfig, chunk_blocks
from retrieval.formats import Block, strip_repeated_lines
from retrieval.identity import corpus_identities

TEMPLATE = ["Page 1 of 4", "National Transportation Safety Board", "Aviation Accident Final Report"]
PLACES = [("Tallahassee, FL", "NYC08CA055", "Piper PA-22-150"), ("Death Valley, CA", "SEA08CA049", "Beech A23"),
          ("Belen, NM", "DEN08CA034", "Sorrell SNJ-7"), ("Wausau, WI", "CHI08CA047", "Cessna Skyhawk 172")]


def _report(place, number, aircraft) -> list[Block]:
    head = [Block(t, 1, None, "heading") for t in TEMPLATE]
    return head + [Block(f"Location: {place} Accident Number: {number}", 1),
                   Block(f"Aircraft: {aircraft} Aircraft Damage: Substantial", 1),
                   Block("The pilot reported that the airplane touched down hard and bounced. " * 3, 1),
                   Block("Pilot Information Certificate: Private Age: 85", 2)]


def test_identity_names_the_facts_and_leaves_the_template_out():
    docs = {f"d{i}": (f"2008010{i}X0000{i}.pdf", None, _report(*p)) for i, p in enumerate(PLACES)}
    identity = corpus_identities(docs)
    first = identity["d0"]
    assert "Tallahassee, FL" in first and "NYC08CA055" in first and "Piper PA-22-150" in first
    assert "National Transportation Safety Board" not in first and "Page 1 of 4" not in first
    assert "touched down" not in first  # prose is not identity
    assert first.startswith("20080100X00000")  # what the file name says comes first
    assert len({v for v in identity.values()}) == len(PLACES)


def test_a_question_naming_the_place_reaches_that_report(tmp_path):
    """End to end on the real NTSB PDFs: four same-template reports, one question per place."""
    from pathlib import Path

    from ragtune.workspace import Workspace
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths
    from retrieval.search import Retriever

    corpus = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "ntsb-reports" / "docs"
    if not corpus.is_dir():
        pytest.skip("the shared NTSB corpus is not here")
    files = sorted(corpus.glob("*.pdf"))[:4]
    ws = Workspace.create("ntsb", root=tmp_path)
    ingest_paths(ws, files)
    built = build_index(ws, progress=False)
    assert built["tuned"]["settings"] and built["tuned"]["questions"] > 0
    retriever = Retriever.for_workspace(ws)
    for c in retriever.chunks:  # every chunk's context names its report
        assert "Accident Number" in (c.title or "") and "National Transportation Safety Board" not in c.title
    places = {"20071229X02007.pdf": "Tallahassee", "20071231X02009.pdf": "Death Valley",
              "20080102X00005.pdf": "Belen", "20080104X00020.pdf": "Wausau"}
    for doc, place in places.items():
        if doc in {f.name for f in files}:
            top = retriever.retrieve(f"What was the altimeter setting for the accident at {place}?", k=1)[0]
            assert top.doc == doc, (place, top.citation)


def test_running_headers_and_footers_are_dropped_except_on_the_first_page():
    words = ["runway", "engine", "weather", "pilot", "wreckage"]
    pages = [f"Page {n} of 5 NYC08CA055\nThe {words[n - 1]} section says {n * 17} feet.\nConfidential"
             for n in range(1, 6)]
    out, dropped = strip_repeated_lines(pages)
    assert out[0] == pages[0]  # the first page keeps its header (it is where identity is read)
    assert all("NYC08CA055" not in p and "Confidential" not in p for p in out[1:])
    assert all(f"{n * 17} feet" in out[n - 1] for n in range(1, 6))
    assert dropped == 8
    assert strip_repeated_lines(pages[:2]) == (pages[:2], 0)  # too few pages to tell


def test_fragments_join_their_neighbours(counter):
    blocks = [Block("Contact", 1, "Contact", "heading"), Block("Phone: 555-0100", 1, "Contact"),
              Block("Address", 1, "Address", "heading"), Block("1 Main Street, Springfield", 1, "Address"),
              Block("Warranty " + "The robot is covered for 24 months from commissioning. " * 6, 1, "Warranty"),
              Block("Footer note.", 1, "Warranty"),
              Block("Specifications " + "The K7 lifts 1,450 kg. " * 10, 2, "Specs"),
              Block("Last line.", 2, "Specs")]
    plain = chunk_blocks(blocks, counter, ChunkingConfig(200, 0, 0))
    merged = chunk_blocks(blocks, counter, ChunkingConfig(200, 0, 50))
    assert any(c.tokens < 10 for c in plain)
    assert all(c.tokens >= 50 for c in merged), [(c.tokens, c.text[:30]) for c in merged]
    assert {c.page for c in merged} == {1, 2}
    assert "".join(c.text for c in merged).replace("\n", "").replace(" ", "") == \
        "".join(b.text for b in blocks).replace(" ", "")  # nothing lost, nothing repeated


def test_tuning_on_evidence_never_chooses_worse_than_the_defaults_or_dense_alone(sample_index):
    from retrieval.search import Retriever
    from retrieval.tuning import made_questions, tune_fusion

    retriever = Retriever.for_workspace(sample_index, tune=False)
    rows = made_questions(retriever.chunks, n=40)
    assert len(rows) >= 20 and all(r["gold"][0][0] for r in rows)
    tuned = tune_fusion(retriever, rows, "test", evidence=True)  # as if these were people's questions
    assert tuned["evidence"] is True
    assert tuned["score"] >= tuned["default_score"] - 1e-9
    hits = tuned["hit_at_5"]
    assert hits["chosen"] >= hits["defaults"] and hits["chosen"] >= hits["dense"]
    assert set(tuned["settings"]) == {"dense_weight", "bm25_weight", "title_weight", "rrf_k", "k"}


def test_questions_made_from_the_corpus_keep_the_defaults_and_say_why(sample_index):
    """Made questions copy a sentence's words (overlap near 1): they reward BM25, so nothing is chosen on
    them; the people's questions of the sample gold set are worded differently."""
    from ragtune.paths import repo_datasets_dir
    from retrieval.evaluate import load_qa
    from retrieval.search import Retriever
    from retrieval.settings import RetrievalSettings
    from retrieval.tuning import PARAPHRASE_MAX_OVERLAP, describe_tuning, made_questions, tune_fusion, wording_overlap

    retriever = Retriever.for_workspace(sample_index, tune=False)
    made = made_questions(retriever.chunks, n=40)
    people = load_qa(repo_datasets_dir() / "sample_qa.jsonl")
    assert wording_overlap(made, retriever.chunks) > PARAPHRASE_MAX_OVERLAP
    assert wording_overlap(people, retriever.chunks) < wording_overlap(made, retriever.chunks)
    tuned = tune_fusion(retriever, made, "questions made from the corpus's sentences", evidence=False)
    defaults = RetrievalSettings()
    assert tuned["evidence"] is False
    assert tuned["settings"] == {"dense_weight": defaults.dense_weight, "bm25_weight": defaults.bm25_weight,
                                 "title_weight": defaults.title_weight, "rrf_k": defaults.rrf_k, "k": defaults.k}
    line = describe_tuning(tuned)
    assert line.startswith("Fusion: the defaults (dense 1, BM25 1, title 1, RRF k 60, 5 passages per answer).")
    assert "Nothing was chosen" in line and "ragtune index --qa" in line


def test_the_tuned_fusion_is_stored_with_the_index_and_used(sample_index):
    from retrieval.index import index_status
    from retrieval.search import Retriever

    tuned = index_status(sample_index)["tuned"]
    retriever = Retriever.for_workspace(sample_index)
    for key in ("dense_weight", "bm25_weight", "title_weight", "rrf_k"):
        assert getattr(retriever.settings, key) == tuned["settings"][key]
    assert retriever.answer_k == tuned["settings"]["k"]
    plain = Retriever.for_workspace(sample_index, tune=False)
    assert plain.settings.rrf_k == 60 and plain.answer_k is None


def test_questions_people_rated_up_are_the_evidence_the_fusion_is_chosen_on(sample_index, tmp_path):
    """Twenty questions end users asked the deployed assistant and rated up, with the source its answer
    cited, are people's questions: the next index build chooses its fusion on them."""
    import shutil

    from ragtune import feedback
    from ragtune.paths import repo_datasets_dir
    from ragtune.workspace import Workspace
    from retrieval.evaluate import load_qa
    from retrieval.index import build_index

    ws = Workspace(shutil.copytree(sample_index.root, tmp_path / "ws"))
    rows = load_qa(repo_datasets_dir() / "sample_qa.jsonl")[:24]
    for i, row in enumerate(rows):
        doc, page = row["gold"][0]
        turn = feedback.record_conversation(ws, row["question"], "an answer [1]", variant="rag",
                                            citations=[{"n": 1, "doc": doc, "page": page}])
        feedback.record_feedback(ws, turn["message_id"], "up" if i % 6 else "down")  # 20 up, 4 down
    assert len(feedback.rated_up_sources(ws)) == 20
    built = build_index(ws, progress=False)  # the same chunks: the same vectors, a new choice
    tuned = built["tuned"]
    assert built["unchanged"] and built["embedded"] == 0
    assert tuned["source"] == "questions people asked and rated up" and tuned["evidence"] is True
    assert tuned["questions"] == 20
    assert tuned["hit_at_5"]["chosen"] >= max(tuned["hit_at_5"]["defaults"], tuned["hit_at_5"]["dense"])
