"""What a PDF's streams decode to, measured before PDFium or pdfminer opens the file.

PDFium inflates a page's content stream whole, then parses it at about 16 MB of memory per MB of
drawing operators: a 0.8 MB PDF whose one content stream inflated to 256 MB took ``ragtune ingest``
14 s and 4 GB, and was added. Here every stream that text extraction decodes is decoded in a
streaming loop with a budget, as the parts of a zip are (``ingest_gate.check_archive``): the file is
refused once the total passes the cap, or once a stream has inflated more than the ratio cap
(judged after its first megabyte), so a bomb costs about a megabyte of work and never more than
the cap plus one chunk.

Decoded: Flate, LZW, RunLength, ASCII85 and ASCIIHex, chained as the stream's /Filter says, after
decryption when the file is encrypted without a user password (as the NTSB reports are). Image
codecs end a chain: PDFium decodes them only to draw. Images and attached files are skipped, since
text extraction never decodes them, unless a page names one as its /Contents or a Type 3 font as a
glyph (/CharProcs): PDFium parses those as operators whatever their dictionary says. Names are
compared after their #xx escapes are undone. What cannot be judged (a stream dictionary that cannot
be read, filters named indirectly, an encryption other than the standard one) is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from .errors import BadInputError

MB = 1024 * 1024
CHUNK = 1 << 16
# A stream may decode to this much before its compression ratio is judged, as a zip part may.
RATIO_GRACE_BYTES = MB
_STREAM = re.compile(rb"stream(?=[\s/<>\[\]()%{}])")
_LINE_END = re.compile(rb"\r\n|\n|\r")
_OBJ_NUMBERS = re.compile(rb"(?<![0-9])(\d+)\s+(\d+)\s+$")
_REF = re.compile(rb"\s*(\d+)\s+(\d+)\s+R(?![^\s/<>\[\]()%{}])")
_ESCAPED_NAME = re.compile(rb"/[^\s/<>\[\]()%{}#]*#[0-9A-Fa-f]{2}[^\s/<>\[\]()%{}]*")
_OBJ_HEADER = re.compile(rb"(?<![0-9])(\d+)\s+\d+\s+obj(?![^\s/<>\[\]()%{}])")
_DELIMITERS = {b"", *(bytes([c]) for c in b" \t\r\n\f\x00/<>[]()%{}")}
_IMAGE_CODECS = {"DCTDecode", "DCT", "JPXDecode", "JBIG2Decode", "CCITTFaxDecode", "CCF"}
_DRAWN_KEYS = (b"Contents", b"CharProcs")  # what PDFium parses as operators, whatever the stream says it is
_MAX_KEYS = 16  # (encryption dictionary, document id) pairs tried; more is refused

Chunks = Iterator[bytes]


@dataclass
class _Stream:
    objnum: int | None
    gen: int
    attrs: dict
    start: int
    end: int

    @property
    def skipped_for_text(self) -> bool:
        """An image or an attached file: text extraction never decodes it (unless a page draws it). An object
        or cross-reference stream is read whatever its /Subtype says."""
        kind = _name(self.attrs.get("Type"))
        return self.objnum is not None and (kind == "EmbeddedFile" or kind in (None, "XObject")
                                            and _name(self.attrs.get("Subtype")) == "Image")


def check_pdf_streams(name: str, data: bytes, max_decoded_bytes: int, max_ratio: float,
                      max_streams: int = 50_000) -> int:
    """Refuse a PDF whose streams decode to more than `max_decoded_bytes` in all, one of whose streams
    inflates more than `max_ratio` times, or that holds more than `max_streams` streams (each costs a
    parse here); returns the bytes decoded. Only object streams are kept."""
    streams = _locate(name, data, max_streams)
    decryptors = _decryption(name, data)
    meter = _Meter(name, max_decoded_bytes, max_ratio)
    object_streams: list[tuple[_Stream, bytes]] = []
    for stream in streams:
        if not stream.skipped_for_text:
            keep = _name(stream.attrs.get("Type")) == "ObjStm"
            decoded = meter.measure(data, stream, decryptors, keep)
            if decoded:
                object_streams.append((stream, decoded))
    skipped = [s for s in streams if s.skipped_for_text]
    if skipped:
        drawn = _drawn_objects(data, object_streams, {s.objnum for s in streams}, max_streams)
        for stream in skipped:
            if drawn is None or stream.objnum in drawn:
                meter.measure(data, stream, decryptors, False)
    return meter.total


# ------------------------------------------------------------------ finding streams

def _locate(name: str, data: bytes, max_streams: int) -> list[_Stream]:
    """Every stream of the file with its object number and dictionary, in file order."""
    found, pos = [], 0
    while match := _STREAM.search(data, pos):
        pos = match.end()
        if not data[max(0, match.start() - 64):match.start()].rstrip().endswith(b">>"):
            continue  # "endstream", or the word inside a text
        if len(found) == max_streams:
            raise BadInputError(f"'{name}' holds more than {max_streams} streams, more than a real document "
                                "holds; split it.")
        head = data[max(0, match.start() - CHUNK):match.start()]
        objnum, gen, dict_at = _object_header(head)
        attrs = _parse(head[dict_at:], whole=True) if dict_at is not None else None
        if not isinstance(attrs, dict):
            raise BadInputError(f"'{name}' has a stream whose dictionary cannot be read (near byte {match.start()}), "
                                "so its size cannot be checked; save it again as PDF.")
        start, length = _next_line(data, match.end()), attrs.get("Length")
        fits = isinstance(length, int) and 0 <= length <= len(data) - start
        end = data.find(b"endstream", start + length if fits else start)
        end = len(data) if end < 0 else end
        # As PDFium reads it: /Length when "endstream" follows it, else everything up to "endstream".
        stop = start + length if fits and not data[start + length:end].strip() else end
        found.append(_Stream(objnum, gen, attrs, start, stop))
        pos = max(pos, end)
    return found


def _next_line(data: bytes, at: int) -> int:
    """Where a stream's data starts: on the line after its keyword, as PDFium reads it."""
    end = _LINE_END.search(data, at)
    return end.end() if end else len(data)


def _object_header(head: bytes) -> tuple[int | None, int, int | None]:
    """(object number, generation, where the dictionary starts) of the object `head` ends inside."""
    at = len(head)
    while (at := head.rfind(b"obj", 0, at)) >= 0:
        numbers = _OBJ_NUMBERS.search(head, max(0, at - 40), at)
        if numbers and head[at + 3:at + 4] in _DELIMITERS:
            return int(numbers.group(1)), int(numbers.group(2)), at + 3
    return None, 0, None


def _parse(text: bytes, whole: bool = False):
    """The first PDF object in `text` (names unescaped; ``N G R`` a reference), or None when it cannot
    be read. `whole`: None unless that object is all `text` holds."""
    from pdfminer.pdfparser import PDFStreamParser
    from pdfminer.pdftypes import PDFObjRef
    from pdfminer.psexceptions import PSEOF

    ref = _REF.match(text)
    if ref and not whole:
        return PDFObjRef(None, int(ref.group(1)))
    parser = PDFStreamParser(text + b"\n")
    try:
        value = parser.nextobject()[1]
    except Exception:  # pdfminer raises its own syntax errors, and EOF on a cut object
        return None
    if not whole:
        return value
    try:
        parser.nextobject()
    except PSEOF:
        return value
    except Exception:
        return None
    return None  # more than one object: not one stream's dictionary


def _name(value) -> str | None:
    name = getattr(value, "name", None)
    return name.decode("latin-1") if isinstance(name, bytes) else name


def _filters(name: str, stream: _Stream) -> list[str]:
    given = stream.attrs.get("Filter")
    names = [_name(f) for f in (given if isinstance(given, list) else [given] if given is not None else [])]
    if None in names:
        raise BadInputError(f"'{name}' names the filters of a stream indirectly, so its size cannot be checked; "
                            "save it again as PDF.")
    return names


# ------------------------------------------------------------------ measuring

class _Meter:
    """Bytes decoded so far, per stream and per file, against the caps; raises on the first excess."""

    def __init__(self, name: str, budget: int, max_ratio: float):
        self.name, self.budget, self.max_ratio = name, budget, max_ratio
        self.total = 0

    def measure(self, data: bytes, stream: _Stream, decryptors: list, keep: bool) -> bytes:
        """Decode one stream each way it may be stored (as is, encrypted); returns the longest text if `keep`."""
        filters = _filters(self.name, stream)
        kept = b""
        for decrypt in decryptors:
            raw = _Source(memoryview(data)[stream.start:stream.end])
            chunks = decrypt(raw, stream) if decrypt else iter(raw)
            seen, parts = 0, []
            try:
                for piece in _decode(chunks, filters):
                    seen += len(piece)
                    self._add(len(piece), seen, raw.fed)
                    if keep:
                        parts.append(piece)
            except (zlib.error, ValueError, IndexError, struct.error):
                pass  # damaged, or not stored this way: PDFium too stops where decoding fails
            if keep and seen > len(kept):
                kept = b"".join(parts)
        return kept

    def _add(self, size: int, seen: int, consumed: int) -> None:
        self.total += size
        if self.total > self.budget:
            raise BadInputError(f"'{self.name}' holds streams that decode to more than {self.budget // MB} MB "
                                "(images aside), more than a real document holds; refused as a possible "
                                "decompression bomb.")
        if seen > RATIO_GRACE_BYTES and seen / max(consumed, 1) > self.max_ratio:
            raise BadInputError(f"'{self.name}' has a stream compressed more than {self.max_ratio:.0f}x, more "
                                "than a real document reaches; refused as a possible decompression bomb.")


class _Source:
    """A stream's raw bytes in chunks, counting what was handed out (the ratio is judged on it)."""

    def __init__(self, view: memoryview):
        self.view, self.fed = view, 0

    def __iter__(self) -> Chunks:
        while self.fed < len(self.view):
            chunk = self.view[self.fed:self.fed + CHUNK // 4]
            self.fed += len(chunk)
            yield bytes(chunk)


def _decode(chunks: Chunks, filters: list[str]) -> Chunks:
    """The chunks through the filters, as far as text extraction decodes them."""
    for name in filters:
        if name == "Crypt":  # decryption is tried for every stream already
            continue
        if name in _IMAGE_CODECS or name not in _DECODERS:
            break
        chunks = _DECODERS[name](chunks)
    return chunks


def _inflate(chunks: Chunks) -> Chunks:
    inflater = zlib.decompressobj()
    for chunk in chunks:
        while chunk:
            yield inflater.decompress(chunk, CHUNK)
            if inflater.eof:
                return
            chunk = inflater.unconsumed_tail


def _unlzw(chunks: Chunks) -> Chunks:
    """LZW as PDF writes it (early change): codes of 9 to 12 bits, 256 clears the table, 257 ends."""
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    width, bits, held, previous, out = 9, 0, 0, b"", bytearray()
    for chunk in chunks:
        for byte in chunk:
            bits, held = bits << 8 | byte, held + 8
            while held >= width:
                held -= width
                code, bits = bits >> held, bits & ((1 << held) - 1)
                if code == 256:
                    del table[258:]
                    width, previous = 9, b""
                    continue
                if code == 257:
                    yield bytes(out)
                    return
                if code < len(table):
                    entry = table[code]
                elif code == len(table) and previous:
                    entry = previous + previous[:1]
                else:
                    raise ValueError("bad LZW code")
                if previous:
                    table.append(previous + entry[:1])
                    width = min(12, (len(table) + 1).bit_length())
                out += entry
                previous = entry
                if len(out) >= CHUNK:
                    yield bytes(out)
                    out.clear()
    yield bytes(out)


def _unrun(chunks: Chunks) -> Chunks:
    """RunLength: a length byte n, then n+1 bytes as they are (n < 128) or one byte 257-n times."""
    pending = b""
    for chunk in chunks:
        data, at, out = pending + chunk, 0, bytearray()
        while at < len(data):
            n = data[at]
            if n == 128:
                yield bytes(out)
                return
            size = n + 2 if n < 128 else 2
            if at + size > len(data):
                break
            out += data[at + 1:at + size] if n < 128 else data[at + 1:at + 2] * (257 - n)
            at += size
            if len(out) >= CHUNK:
                yield bytes(out)
                out.clear()
        pending = data[at:]
        yield bytes(out)


def _whole(decode: Callable[[bytes], bytes]) -> Callable[[Chunks], Chunks]:
    """For the ASCII filters, which never give more than they read: decode the whole input at once."""

    def run(chunks: Chunks) -> Chunks:
        yield decode(b"".join(chunks))

    return run


def _ascii85(text: bytes) -> bytes:
    text = re.sub(rb"\s", b"", text).split(b"~>", 1)[0]
    return base64.a85decode(text.removeprefix(b"<~"), adobe=False)


def _ascii_hex(text: bytes) -> bytes:
    digits = re.sub(rb"[^0-9A-Fa-f]", b"", text.split(b">", 1)[0])
    return bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode())


_DECODERS: dict[str, Callable[[Chunks], Chunks]] = {
    "FlateDecode": _inflate, "Fl": _inflate, "LZWDecode": _unlzw, "LZW": _unlzw,
    "RunLengthDecode": _unrun, "RL": _unrun, "ASCII85Decode": _whole(_ascii85), "A85": _whole(_ascii85),
    "ASCIIHexDecode": _whole(_ascii_hex), "AHx": _whole(_ascii_hex),
}


# ------------------------------------------------------------------ encryption

def _decryption(name: str, data: bytes) -> list:
    """The ways a stream may be stored: as is, and decrypted with each key the file's trailers give. A
    decoy trailer could name another key than the one PDFium follows, so every key found is tried and
    what decodes is counted; cross-reference and some metadata streams stay plain in encrypted files."""
    cannot = BadInputError(f"'{name}' is encrypted in a way ragtune cannot check; remove its protection "
                           "(print it to a new PDF) and try again.")
    try:
        given = {repr(v): v for v in _values_of(data, b"Encrypt", 10_000)}  # each update repeats the trailer's
        ids = {v[0]: v for v in _values_of(data, b"ID", 10_000) if given and isinstance(v, list) and len(v) == 2
               and all(isinstance(x, bytes) for x in v)}  # the key depends on the first id only
    except _TooMany:
        raise cannot from None
    if not given:
        return [None]
    encrypts = [value for value in given.values() if isinstance(value, dict)]
    spots = _definitions(data) if len(encrypts) < len(given) else {}
    for value in given.values():  # an indirect /Encrypt: every definition of its object
        encrypts += [_parse(holder[at:at + CHUNK]) for holder, at in spots.get(getattr(value, "objid", None), [])]
    pairs = [(encrypt, docid) for encrypt in encrypts for docid in list(ids.values()) or [[b"", b""]]]
    if len(pairs) > _MAX_KEYS:
        raise cannot
    handlers, refusal = {}, cannot
    for encrypt, docid in pairs:
        try:
            handler = _security_handler(name, encrypt, docid)
        except BadInputError as exc:
            refusal = exc
            continue
        handlers[(handler.key, getattr(handler, "stmf", None))] = handler
    if not handlers:
        raise refusal
    return [None, *(functools.partial(_decrypted, handler) for handler in handlers.values())]


def _security_handler(name: str, encrypt, docid):
    from pdfminer.pdfdocument import PDFDocument, PDFPasswordIncorrect

    try:
        if not isinstance(encrypt, dict) or _name(encrypt.get("Filter")) != "Standard":
            raise ValueError("not the standard security handler")
        factory = PDFDocument.security_handler_registry[int(encrypt.get("V", 0))]
        return factory(docid, encrypt, "")
    except PDFPasswordIncorrect:
        raise BadInputError(f"'{name}' is password-protected; remove the password and upload it again.") from None
    except Exception:
        raise BadInputError(f"'{name}' is encrypted in a way ragtune cannot check; remove its protection "
                            "(print it to a new PDF) and try again.") from None


def _decrypted(handler, raw: _Source, stream: _Stream) -> Chunks:
    """The stream's chunks decrypted with its object's key (RC4 or AES, as the file's handler says)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    method = getattr(getattr(handler, "cfm", {}).get(getattr(handler, "stmf", None)), "__name__", "decrypt_rc4")
    if method == "decrypt_identity" or stream.objnum is None:
        return
    suffix = struct.pack("<L", stream.objnum)[:3] + struct.pack("<L", stream.gen)[:2]
    chunks = iter(raw)
    if method == "decrypt_rc4":
        key = hashlib.md5(handler.key + suffix).digest()[:min(len(handler.key) + 5, 16)]
        decryptor = Cipher(ARC4(key), mode=None).decryptor()
    else:
        key = handler.key if method == "decrypt_aes256" else hashlib.md5(handler.key + suffix + b"sAlT").digest()
        first = next(chunks, b"")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(first[:16].ljust(16, b"\0"))).decryptor()
        chunks = _prepend(first[16:], chunks)
    for chunk in chunks:
        yield decryptor.update(chunk)


def _prepend(first: bytes, rest: Iterable[bytes]) -> Chunks:
    yield first
    yield from rest


# ------------------------------------------------------------------ which streams pages draw

def _values_of(text: bytes, key: bytes, limit: int | None = None) -> Iterator:
    """The values of every name `key` in `text`, written plainly or with #xx escapes; at most `limit`."""
    plain = re.compile(b"/" + key + rb"(?=[\s/<>\[\]()%{}])")
    spots = [m.end() for m in plain.finditer(text)]
    spots += [m.end() for m in _ESCAPED_NAME.finditer(text) if _unescape(m.group()) == b"/" + key]
    if limit is not None and len(spots) > limit:
        raise _TooMany
    for at in sorted(spots):
        value = _parse(text[at:at + CHUNK])
        if value is not None:
            yield value


class _TooMany(Exception):
    """More names to follow than a real document holds."""


def _unescape(name: bytes) -> bytes:
    return re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), name)


def _drawn_objects(data: bytes, object_streams: list[tuple[_Stream, bytes]], streams: set,
                   limit: int) -> set[int] | None:
    """Numbers of the streams that pages (/Contents) and Type 3 fonts (/CharProcs) name, which PDFium parses
    as operators; None when one of those names cannot be followed, or there are more than `limit`."""
    drawn: set[int] = set()
    definitions: dict[int, list] | None = None
    try:
        for text in [data, *(decoded for _, decoded in object_streams)]:
            for key in _DRAWN_KEYS:
                for value in _values_of(text, key, limit):
                    for objnum in _refs_in(value):
                        if objnum in streams:
                            drawn.add(objnum)
                            continue
                        if definitions is None:
                            definitions = _definitions(data, object_streams)
                        if objnum not in definitions:
                            return None
                        # An array or a dictionary of streams, or a text (an annotation's): every definition
                        # counts, since an incremental update may replace one with another.
                        for holder, at in definitions[objnum]:
                            drawn |= set(_refs_in(_parse(holder[at:at + CHUNK])))
    except _TooMany:
        return None
    return drawn


def _refs_in(value) -> list[int]:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    return [item.objid for item in items if getattr(item, "objid", None) is not None]


def _definitions(data: bytes, object_streams: list[tuple[_Stream, bytes]] = ()) -> dict[int, list[tuple[bytes, int]]]:
    """Where every definition of every object starts: (the text holding it, offset), in the file and in
    object streams."""
    spots: dict[int, list[tuple[bytes, int]]] = {}
    for match in _OBJ_HEADER.finditer(data):
        spots.setdefault(int(match.group(1)), []).append((data, match.end()))
    for stream, decoded in object_streams:
        first = stream.attrs.get("First")
        numbers = [int(n) for n in re.findall(rb"\d+", decoded[:first])] if isinstance(first, int) else []
        for number, offset in zip(numbers[::2], numbers[1::2]):
            spots.setdefault(number, []).append((decoded, first + offset))
    return spots
