"""What tells a document apart from the others of its corpus, as one line for every chunk's header.

Quarterly reports, accident reports, protocols: a corpus often holds many documents on one
template that differ only in their facts (company, period, place, date, aircraft, drug). Their
opening lines are mostly the template ("National Transportation Safety Board / Aviation Accident
Final Report"), so a description made of opening lines names none of them. A document's identity
is its file name and title, then the opening lines of its first page (form fields such as
"Location: Tallahassee, FL Accident Number: NYC08CA055" included) *minus the lines that several
documents of the corpus share*. The line is prepended to every chunk for embedding and BM25, and
title routing reads it, so a question naming the place, date or company reaches that document.
"""

from __future__ import annotations

import re

from .formats import Block

MAX_WORDS = 48          # the line is repeated in every chunk: long enough to name, short enough not to drown it
PROSE_WORDS = 30        # a longer opening block is prose, not a title, a form field or a date
UNPAGED_LEAD_BLOCKS = 3
UNPAGED_LINE_WORDS = 12  # ... and only short ones: a web page or a text file opens with its first paragraph
LEAD_BLOCKS = 12        # opening blocks read from the first page (and the next when the first is nearly empty)
SHARED_FRACTION = 0.3   # a line found in this share of the documents (and in 2 at least) is template


def _key(text: str) -> str:
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def name_words(name: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name)
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def real_title(description: str | None, name: str) -> str | None:
    """The title part of a stored description ("Title - opening lines"); None when it is only the file name."""
    if not description:
        return None
    title = description.split(" - ")[0].strip()
    return None if title.lower() == name_words(name).lower() else title


def lead_lines(blocks: list[Block]) -> list[str]:
    """The opening lines of a document: the short blocks of its first page (titles, form fields, dates)."""
    if not blocks:
        return []
    first = blocks[0].page
    lines, words = [], 0
    # Without pages there is no cover: only the opening blocks (a title, a version line) name the
    # document; further on, headings and FAQ questions name topics that other documents share.
    for n, b in enumerate(blocks[:LEAD_BLOCKS if first is not None else UNPAGED_LEAD_BLOCKS]):
        if first is None and n and b.kind == "heading":
            break  # the first section heading ends the title area
        if b.page != first and (words >= 5 or b.page > (first or 0) + 1):
            break  # the first page, or the second when the first is a bare cover
        # A table's rows are its lines ("Protocol Number: 3"), each read like a block of its own.
        for row in b.text.split("\n") if b.kind == "table" else [b.text]:
            text = " ".join(row.split())
            if not text:
                continue
            # A long block keeps its first sentence when that is short (a title run on into the next
            # line); running prose says what happened, not which document this is.
            text = re.split(r"(?<=[a-z0-9)]{2}[.!?])\s+(?=[A-Z])", text)[0]
            if len(text.split()) > (PROSE_WORDS if first is not None else UNPAGED_LINE_WORDS):
                continue
            lines.append(text)
            words += len(text.split())
            if len(lines) >= LEAD_BLOCKS:
                return lines
    return lines


def corpus_identities(docs: dict[str, tuple[str, str | None, list[Block]]]) -> dict[str, str]:
    """{doc_id: identity line} for {doc_id: (file name, title, blocks)}, template lines left out.

    Pass no blocks for a table (CSV, JSONL): its first rows are data, not what the file is.
    """
    leads = {d: lead_lines(blocks) for d, (_, _, blocks) in docs.items()}
    count: dict[str, int] = {}
    for lines in leads.values():
        for k in {_key(x) for x in lines}:
            count[k] = count.get(k, 0) + 1
    shared_at = max(2, SHARED_FRACTION * len(docs))
    out = {}
    for d, (name, title, _) in docs.items():
        parts = [name_words(name)]
        if title and title.lower() != parts[0].lower():
            parts.append(title)
        have = " ".join(parts).lower()
        words = sum(len(p.split()) for p in parts)
        for line in leads[d]:
            if count[_key(line)] >= shared_at or line.lower() in have:
                continue
            room = MAX_WORDS - words
            if room <= 3:
                break
            piece = " ".join(line.split()[:room])
            parts.append(piece)
            have += " " + piece.lower()
            words += len(piece.split())
        out[d] = " | ".join(parts)
    return out
