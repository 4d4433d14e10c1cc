"""Structure-aware chunking measured in the embedder's own tokens.

A chunk never spans two sections or two pages' starts: headings open a new chunk (a run of
headings stays together with the text under it), and a block is only split when it alone is
larger than a chunk, first at sentence ends, then at word boundaries. When a chunk is closed
because it is full, the next one repeats the last ``overlap_tokens`` tokens of it, so a fact cut
at the boundary is still whole in one of the two. Overlap is never carried across sections.

Invariant (tested): dropping each chunk's repeated prefix (``overlap_chars``) and concatenating
gives back every character of the blocks except whitespace.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from .formats import Block


@dataclass
class ChunkingConfig:
    chunk_tokens: int = 200
    overlap_tokens: int = 40
    min_tokens: int = 0  # a piece shorter than this is merged with its section's neighbours (see chunk_blocks)


@dataclass
class DraftChunk:
    text: str
    page: int | None
    section: str | None
    tokens: int
    overlap_chars: int = 0  # the first characters repeat the end of the previous chunk


class TokenCounter:
    """Counts and locates tokens with the embedder's tokenizer (no special tokens)."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self._tok = _load_tokenizer(str(self.model_dir))

    def offsets(self, text: str) -> list[tuple[int, int]]:
        if hasattr(self._tok, "encode_batch"):  # tokenizers.Tokenizer
            return [o for o in self._tok.encode(text, add_special_tokens=False).offsets]
        return list(self._tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"])

    def count(self, text: str) -> int:
        if hasattr(self._tok, "encode_batch"):
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def count_many(self, texts: list[str]) -> list[int]:
        if hasattr(self._tok, "encode_batch"):
            return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]
        return [self.count(t) for t in texts]


@lru_cache(maxsize=4)
def _load_tokenizer(model_dir: str):
    path = Path(model_dir)
    if (path / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        return tok
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# Split points from coarse to fine: list items and blank lines, sentence ends, line ends.
_SPLITS = (
    re.compile(r"\n\s*\n\s*|\n(?=\s*(?:[-*+•]|\d{1,3}[.)]|\|)\s)"),
    re.compile(r"(?<=[.!?;])\s+(?=\S)"),
    re.compile(r"\n+"),
)
# A table block holds one self-contained row per line ("Header: cell; Header: cell"): rows first,
# never at the "; " between cells.
_TABLE_SPLITS = (re.compile(r"\n+"), re.compile(r"(?<=[.!?])\s+(?=\S)"))


def _split_at(text: str, pattern: re.Pattern):
    """(separator before, piece) pairs, one at a time; joining them back gives `text` (bar blank pieces)."""
    start, sep = 0, ""
    for m in pattern.finditer(text):
        piece = text[start:m.start()]
        if piece.strip():
            yield sep, piece
        sep, start = m.group(0), m.end()
    piece = text[start:]
    if piece.strip():
        yield sep, piece


# A text longer than this is split before it is ever tokenized whole: no chunk (a few hundred tokens)
# can hold it, since a token of these tokenizers spans at most about a hundred characters (a word
# longer than that is one unknown token). Normal documents have no block this long (the largest
# paragraph of the shared corpora and the sample data is far shorter), so they chunk exactly as
# before; a 200 MB paragraph is cut at sentence, line or word boundaries into pieces tokenized one
# at a time, so neither its whole token list nor all its pieces are held at once.
MAX_TOKENIZED_CHARS = 100_000
# An overlong run of text with no sentence or line end is cut at whitespace into windows this long,
# each then cut by tokens (the cut between windows falls at a space, not inside a word).
_WINDOW_CHARS = 32_000


def _split_text(text: str, counter: "TokenCounter", limit: int, level: int = 0,
                splits: tuple[re.Pattern, ...] = _SPLITS):
    """(separator before, piece, its tokens or None) of at most `limit` tokens each, coarse split
    points first; pieces are tokenized in batches, never a piece too long to hold a chunk."""
    if level >= len(splits):
        for i, p in enumerate(_split_by_tokens(text, counter, limit)):
            yield (" " if i else "", p, None)
        return
    pending = _split_at(text, splits[level])
    while True:
        batch = list(itertools.islice(pending, 256))
        if not batch:
            return
        short = [piece for _, piece in batch if len(piece) <= MAX_TOKENIZED_CHARS]
        counts = iter(counter.count_many(short) if short else [])
        for sep, piece in batch:
            n = next(counts) if len(piece) <= MAX_TOKENIZED_CHARS else None
            if n is not None and n <= limit:
                yield sep, piece, n
            else:
                first = True
                for sub_sep, sub, m in _split_text(piece, counter, limit, level + 1, splits):
                    yield (sep if first else sub_sep), sub, m
                    first = False


def _split_by_tokens(text: str, counter: TokenCounter, limit: int):
    """Cut `text` into pieces of at most `limit` tokens, at word starts where possible."""
    if len(text) <= MAX_TOKENIZED_CHARS:
        yield from _split_window_by_tokens(text, counter, limit)
        return
    start = 0
    while start < len(text):
        end = min(start + _WINDOW_CHARS, len(text))
        if end < len(text):
            space = max(text.rfind(" ", start + _WINDOW_CHARS // 2, end), text.rfind("\t", start + _WINDOW_CHARS // 2, end))
            end = space if space > start else end
        yield from _split_window_by_tokens(text[start:end], counter, limit)
        start = end


def _split_window_by_tokens(text: str, counter: TokenCounter, limit: int):
    offsets = counter.offsets(text)
    start_tok = 0
    while start_tok < len(offsets):
        end_tok = min(start_tok + limit, len(offsets))
        if end_tok < len(offsets):
            cut = _word_start(text, offsets, end_tok)
            if cut <= start_tok:
                cut = end_tok
            end_tok = cut
        a = offsets[start_tok][0] if start_tok else 0
        b = offsets[end_tok][0] if end_tok < len(offsets) else len(text)
        piece = text[a:b]
        if piece.strip():
            yield piece
        start_tok = end_tok


def _word_start(text: str, offsets: list[tuple[int, int]], i: int) -> int:
    """Index of the token that begins the word containing token i."""
    while i > 0 and offsets[i][0] == offsets[i - 1][1] and not text[offsets[i][0]].isspace():
        i -= 1
    return i


def overlap_tail(text: str, counter: TokenCounter, n_tokens: int) -> str:
    """The shortest suffix of `text` starting at a word and holding at least `n_tokens` tokens."""
    if n_tokens <= 0:
        return ""
    offsets = counter.offsets(text)
    if len(offsets) <= n_tokens:
        return text
    i = len(offsets) - n_tokens
    j = _word_start(text, offsets, i)
    if i - j <= 4:  # snap to the word start unless the "word" is a long unbroken string
        i = j
    return text[offsets[i][0]:]


@dataclass
class _Unit:
    text: str
    tokens: int
    page: int | None
    section: str | None
    heading: bool
    sep: str = "\n\n"  # what stood between this unit and the previous one in the block
    caption: str | None = None  # a table row's caption (its block's section), repeated atop a continued table


def _counted(blocks: Iterable[Block], counter: TokenCounter):
    """(block, its token count), tokenized in batches of bounded size; a block too long to tokenize
    whole gets None (it is split, never kept whole)."""
    batch: list[Block] = []
    chars = 0

    def flush():
        counts = counter.count_many([b.text for b in batch])
        yield from zip(batch, counts)
        batch.clear()

    for block in blocks:
        if len(block.text) > MAX_TOKENIZED_CHARS:
            yield from flush()
            yield block, None
            continue
        batch.append(block)
        chars += len(block.text)
        if len(batch) >= 256 or chars >= 1_000_000:
            yield from flush()
            chars = 0
    yield from flush()


def _units(blocks: Iterable[Block], counter: TokenCounter, limit: int):
    """The blocks as units of at most `limit` tokens, one at a time."""
    for block, n in _counted(blocks, counter):
        table = block.kind == "table"
        if n is not None and n <= (limit // 2 if table else limit):
            yield _Unit(block.text, n, block.page, block.section, block.kind == "heading")
            continue
        caption = block.section if table and block.section else None
        for i, (sep, part, n) in enumerate(_split_text(block.text, counter, limit, splits=_TABLE_SPLITS if table else _SPLITS)):
            yield _Unit(part, counter.count(part) if n is None else n, block.page, block.section, False, sep if i else "\n\n", caption)


def _fits_back(chunks: list[DraftChunk], current: list[_Unit], counter: TokenCounter, size: int) -> bool:
    if not chunks or chunks[-1].page != current[0].page:
        return False
    body = current[0].text + "".join(u.sep + u.text for u in current[1:])
    return chunks[-1].tokens + counter.count(body) + 2 <= size


def chunk_blocks(blocks: Iterable[Block], counter: TokenCounter, config: ChunkingConfig | None = None) -> list[DraftChunk]:
    return list(iter_chunks(blocks, counter, config))


def iter_chunks(blocks: Iterable[Block], counter: TokenCounter, config: ChunkingConfig | None = None) -> Iterator[DraftChunk]:
    """The chunks of `blocks`, each produced once the next one is made (a closing fragment may still
    join the chunk before it): the blocks are read and the chunks handed on one at a time."""
    chunker = _Chunker(counter, config or ChunkingConfig())
    for unit in _units(blocks, counter, chunker.unit_limit):
        chunker.add(unit)
        yield from chunker.settled()
    yield from chunker.finish()


class _Chunker:
    """The chunk being filled and the chunks made: a unit closes the current chunk when it opens a new
    page or section (the chunk is not full) or does not fit (full: the next chunk opens with an overlap)."""

    def __init__(self, counter: TokenCounter, config: ChunkingConfig):
        self.counter, self.config = counter, config
        self.size = max(16, config.chunk_tokens)
        self.overlap = max(0, min(config.overlap_tokens, self.size // 2))
        # the carried tail: `overlap` tokens plus the rest of its first word
        self.reserve = self.overlap + 4 if self.overlap else 0
        self.unit_limit = self.size - self.reserve
        self.chunks: list[DraftChunk] = []  # the last one can still change (a closing fragment joins it)
        self.current: list[_Unit] = []
        self.current_tokens = 0
        self.carried = ""  # overlap text opening the current chunk
        self.joiner = " "  # between the carried text and the chunk's own: a line break after a table caption
        self.carried_tokens = self.reserve

    def add(self, unit: _Unit) -> None:
        if self.current:
            self._close_before(unit)
        self.current.append(unit)
        self.current_tokens += unit.tokens

    def settled(self) -> list[DraftChunk]:
        """The chunks that can no longer change (all but the last), each handed on once."""
        if len(self.chunks) <= 1:
            return []
        done = self.chunks[:-1]
        del self.chunks[:-1]
        return done

    def finish(self) -> list[DraftChunk]:
        if self.current:
            self._close(full=False)
        done, self.chunks = self.chunks, []
        return done

    def _close_before(self, unit: _Unit) -> None:
        """Close the current chunk if `unit` must not join it."""
        current, min_tokens = self.current, self.config.min_tokens
        only_headings = all(u.heading for u in current)
        new_page = unit.page != current[-1].page
        new_section = unit.section != current[-1].section or unit.heading
        boundary = not only_headings and (new_page or new_section)
        # A fragment (under min_tokens) runs on into the next section of its page; at a page end it
        # joins the chunk before it (in _close) or, with nothing on its page to join, the next page.
        hold = boundary and self.current_tokens < min_tokens and (
            not new_page or not _fits_back(self.chunks, current, self.counter, self.size))
        # Rows of one table fill half a chunk at most: a chunk of a few rows matches a question
        # about one of them better than a whole form does (NTSB gold set).
        rows = (unit.caption is not None and unit.caption == current[-1].caption and not boundary
                and self.current_tokens >= min_tokens)  # never a fragment of a few rows
        if boundary and not hold:
            self._close(full=False)
        elif (self.current_tokens + unit.tokens + (self.carried_tokens if self.carried else 0)
              > (self.size // 2 if rows else self.size)):
            self._close(full=True, caption=unit.caption if rows else None)

    def _close(self, full: bool, caption: str | None = None) -> None:
        current = self.current
        body = current[0].text + "".join(u.sep + u.text for u in current[1:])
        text = f"{self.carried}{self.joiner}{body}" if self.carried else body
        tokens = self.counter.count(text)
        if not full and self._joined_to_previous(body, tokens):
            return
        if self.carried and tokens > self.size:  # tokenization across the join can differ by a few tokens
            text, tokens = self._with_shorter_overlap(body, tokens)
        first = next((u for u in current if not u.heading), current[-1])
        self.chunks.append(DraftChunk(text, first.page, first.section, tokens,
                                      len(self.carried) + 1 if self.carried else 0))
        # A table goes on under its caption ("Pilot Information"), so its next rows still say what they are.
        self.carried = caption or (overlap_tail(body, self.counter, self.overlap) if full and self.overlap else "")
        self.joiner = "\n" if caption else " "
        self.carried_tokens = self.counter.count(caption) + 1 if caption else self.reserve
        self.current, self.current_tokens = [], 0

    def _joined_to_previous(self, body: str, tokens: int) -> bool:
        """A fragment closing its page or the document (an address line, a phone number, a table's last
        row: `tokens` under min_tokens) joins the chunk before it rather than standing alone, when both
        fit in one chunk."""
        prev = self.chunks[-1] if self.chunks else None
        captioned = bool(self.carried) and self.joiner == "\n"  # the last rows of a table, under its caption
        if (self.carried and not captioned) or prev is None or prev.page != self.current[0].page:
            return False
        if tokens >= self.config.min_tokens:
            return False
        merged = f"{prev.text}{chr(10) if captioned else chr(10) * 2}{body}"
        merged_tokens = self.counter.count(merged)
        if merged_tokens > self.size:
            return False
        prev.text, prev.tokens = merged, merged_tokens
        self.current, self.current_tokens = [], 0
        return True

    def _with_shorter_overlap(self, body: str, tokens: int) -> tuple[str, int]:
        """The chunk's text and tokens once the carried overlap is cut by what `tokens` passes a chunk."""
        overlap, size = self.overlap, self.size
        self.carried = (overlap_tail(self.carried, self.counter, max(0, overlap - (tokens - size) - 4))
                        if overlap > tokens - size + 4 else "")
        text = f"{self.carried}{self.joiner}{body}" if self.carried else body
        return text, self.counter.count(text)
