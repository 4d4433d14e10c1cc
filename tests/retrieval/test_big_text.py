"""Text at the size limit chunks in bounded memory (issue 24, finding 4), and normal text as before.

A 200 MB paragraph used to be tokenized whole (tens of millions of token ids and offsets at once):
``ragtune ingest`` passed 4 GB in 5 s and was killed (bench/big_text_ingest.py). Overlong text is now
split at sentence, line or word boundaries before it is tokenized, blocks are counted in bounded
batches and units produced one at a time, so memory grows with one chunk, not with the file.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from retrieval.chunking import MAX_TOKENIZED_CHARS, ChunkingConfig, chunk_blocks
from retrieval.formats import Block, parse_file

REPO = Path(__file__).resolve().parents[2]


def _one_paragraph(mb: float, punctuated: bool, seed: int = 3) -> str:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 9))) for _ in range(800)]
    sentences = [" ".join(rng.choices(words, k=rng.randint(6, 20))) + ("." if punctuated else "") for _ in range(500)]
    out, size = [], 0
    while size < mb * 1024 * 1024:
        s = rng.choice(sentences)
        out.append(s)
        size += len(s) + 1
    return " ".join(out)


@pytest.mark.parametrize("punctuated", [True, False], ids=["sentences", "no-punctuation"])
def test_a_huge_paragraph_chunks_within_the_limit_in_bounded_memory(counter, rss_watch, punctuated):
    text = _one_paragraph(4, punctuated)
    assert "\n" not in text and len(text) > 40 * MAX_TOKENIZED_CHARS
    config = ChunkingConfig(200, 40, 50)
    with rss_watch() as watch:
        chunks = chunk_blocks([Block(text, None, None, "paragraph")], counter, config)
    # 4 MB held whole by the tokenizer took several hundred MB (ids, offsets, token strings; 12 MB: +1.9 GB)
    assert watch.extra_mb < 150, watch.extra_mb
    assert max(c.tokens for c in chunks) <= 200
    assert all(counter.count(c.text) == c.tokens for c in chunks[:50])
    kept = "".join(c.text[c.overlap_chars:] for c in chunks)
    assert "".join(kept.split()) == "".join(text.split())  # nothing lost, nothing repeated


def test_ingest_of_a_one_paragraph_text_file(workspace, tmp_path, rss_watch):
    from retrieval.ingest import ingest_paths

    path = tmp_path / "one-line.txt"
    path.write_text(_one_paragraph(3, True, seed=5), encoding="utf-8")
    with rss_watch() as watch:
        [result] = ingest_paths(workspace, [path])
    assert result.status == "added", result
    with workspace.db() as conn:
        n, most = conn.execute("SELECT COUNT(*), MAX(tokens) FROM retrieval_chunks WHERE doc_id=?",
                               (result.doc_id,)).fetchone()
    assert n == result.chunks > 2000 and most <= 200
    assert watch.extra_mb < 400, watch.extra_mb  # the file's text, its blocks and chunks: a few times 3 MB


# sha256 of [[text, page, section, tokens, overlap_chars], ...] per file, chunked by the code before
# this change (default settings): indexes and gold sets depend on these chunks staying the same.
BEFORE = {
    "datasets/sample/employee_handbook.md": "47bdc4f649b85b1e",
    "datasets/sample/faq.md": "5850d433d1235123",
    "datasets/sample/parts_catalog.csv": "4555ea09095e44a1",
    "datasets/sample/warranty_and_support.txt": "f4b3bad71a969988",
    "datasets/sample/travel_policy.docx": "c8820c008eeca094",
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_normal_documents_chunk_exactly_as_before(counter, name):
    doc = parse_file(REPO / name)
    chunks = chunk_blocks(doc.blocks, counter, ChunkingConfig(200, 40, 50))
    rows = [[c.text, c.page, c.section, c.tokens, c.overlap_chars] for c in chunks]
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16] == BEFORE[name]
