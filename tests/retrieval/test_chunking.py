"""Chunker invariants: no text lost, sizes and overlap in embedder tokens, sections and pages respected."""

from __future__ import annotations

import pytest

from retrieval.chunking import ChunkingConfig, chunk_blocks
from retrieval.formats import Block, parse_file


def _letters(text: str) -> str:
    return "".join(text.split())


DOCS = [
    "datasets/sample/employee_handbook.md",
    "datasets/sample/product_manual_k7.pdf",
    "datasets/sample/travel_policy.docx",
    "datasets/sample/parts_catalog.csv",
    "../shared/corpora/format-fixtures/docs/example-10k-1p.html",
    "../shared/corpora/contoso-benefits/docs/PerksPlus.pdf",
]


@pytest.fixture(scope="module")
def parsed():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    return {p: parse_file(repo / p) for p in DOCS}


@pytest.mark.parametrize("size, overlap", [(64, 16), (200, 40), (120, 0)])
@pytest.mark.parametrize("path", DOCS)
def test_no_text_lost_and_sizes_hold(parsed, counter, path, size, overlap):
    doc = parsed[path]
    chunks = chunk_blocks(doc.blocks, counter, ChunkingConfig(size, overlap))
    assert chunks
    # Dropping each chunk's repeated prefix gives back every character of the document, in order.
    assert _letters("".join(c.text[c.overlap_chars:] for c in chunks)) == _letters("".join(b.text for b in doc.blocks))
    for c in chunks:
        assert c.tokens == counter.count(c.text)
        assert c.tokens <= size


def test_overlap_is_the_configured_number_of_tokens(counter):
    text = " ".join(f"Sentence number {i} talks about pallet robots and charging docks." for i in range(80))
    chunks = chunk_blocks([Block(text, 1, "Long section")], counter, ChunkingConfig(100, 25))
    assert len(chunks) > 5
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.overlap_chars > 0
        repeated = nxt.text[: nxt.overlap_chars].strip()
        assert prev.text.endswith(repeated)
        # At least the configured overlap, plus at most the rest of the first word.
        assert 25 <= counter.count(repeated) <= 25 + 4


def test_zero_overlap_repeats_nothing(counter):
    text = " ".join(f"Line {i} of a long paragraph about maintenance." for i in range(60))
    chunks = chunk_blocks([Block(text)], counter, ChunkingConfig(80, 0))
    assert len(chunks) > 3 and all(c.overlap_chars == 0 for c in chunks)


def test_sections_start_new_chunks_and_carry_metadata(counter):
    blocks = [
        Block("Handbook", None, "Handbook", "heading"),
        Block("Vacation", None, "Handbook > Vacation", "heading"),
        Block("You get 27 days.", None, "Handbook > Vacation"),
        Block("Remote work", None, "Handbook > Remote work", "heading"),
        Block("Up to 3 days a week.", None, "Handbook > Remote work"),
    ]
    chunks = chunk_blocks(blocks, counter, ChunkingConfig(200, 40))
    assert [c.section for c in chunks] == ["Handbook > Vacation", "Handbook > Remote work"]
    assert chunks[0].text.startswith("Handbook") and "27 days" in chunks[0].text
    assert chunks[1].text.startswith("Remote work") and chunks[1].overlap_chars == 0  # no overlap across sections


def test_chunks_never_mix_pages(counter):
    blocks = [Block(f"Page {p} paragraph {i} about the K7 robot.", p, "Manual") for p in (1, 2, 3) for i in range(3)]
    chunks = chunk_blocks(blocks, counter, ChunkingConfig(200, 40))
    assert [c.page for c in chunks] == [1, 2, 3]
    for c in chunks:
        assert all(f"Page {c.page} " in line or not line.startswith("Page") for line in c.text.split("\n\n"))


def test_lists_and_tables_split_at_item_boundaries(counter):
    items = "\n".join(f"- item {i}: a replacement part with a long description of its use" for i in range(40))
    chunks = chunk_blocks([Block(items, None, "Parts", "list")], counter, ChunkingConfig(80, 0))
    assert len(chunks) > 2
    for c in chunks:
        assert c.text.startswith("- item")  # no item is cut in the middle
