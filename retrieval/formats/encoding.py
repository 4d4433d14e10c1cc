"""The text of a file's bytes: byte-order marks, UTF-8, else charset-normalizer's best guess."""

from __future__ import annotations

import codecs
import io

from ragtune.errors import BadInputError

_DETECT_BYTES = 1 << 20    # a text file's encoding is checked a MB at a time


def decode_bytes(data: bytes, partial: bool = False) -> str:
    """Bytes held whole as text; `partial`: they are the head of a longer file, cut anywhere."""
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(enc, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if partial and exc.start >= len(data) - 4:  # a multi-byte character cut by the read window
            return data[: exc.start].decode("utf-8")
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise BadInputError("its text encoding could not be recognised")
    return str(best)


def text_encoding(raw) -> str:
    """The encoding of a text file (a binary stream at its start): a byte-order mark, else UTF-8 when
    every byte decodes as UTF-8 (checked a MB at a time), else charset-normalizer's best guess from
    the first MB and the bytes around the first one that is not UTF-8."""
    head = raw.read(_DETECT_BYTES)
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if head.startswith(bom):
            return enc
    decoder = codecs.getincrementaldecoder("utf-8")()
    piece, offset, bad = head, 0, None
    while bad is None:
        try:
            decoder.decode(piece, final=not piece)
        except UnicodeDecodeError as exc:
            bad = offset + exc.start
        if not piece:
            break
        offset += len(piece)
        piece = raw.read(_DETECT_BYTES)
    if bad is None:
        return "utf-8"
    sample = head
    if bad >= len(head):
        raw.seek(max(len(head), bad - (1 << 15)))
        sample += raw.read(1 << 16)
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise BadInputError("its text encoding could not be recognised")
    return best.encoding


def open_text(raw, newline: str | None, encoding: str | None = None) -> io.TextIOWrapper:
    """A text file's binary stream as text from its start, in `encoding` or the one text_encoding finds."""
    raw.seek(0)
    if encoding is None:
        encoding = text_encoding(raw)
        raw.seek(0)
    # errors="replace": a byte the guessed encoding cannot read is one replacement character
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline=newline)
