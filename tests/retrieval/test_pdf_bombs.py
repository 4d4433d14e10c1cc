"""PDF decompression bombs are refused before PDFium opens the file; real PDFs still go in.

The bombs are built here, small on disk: one content stream that inflates to hundreds of MB (the
review's 0.9 MB PDF took `ragtune ingest` 24 s and 3.5 GB, and was added), and the same stream
dressed to slip past a naive check (chained filters, an image label on a page's contents, #xx
escapes in names, an indirect contents array, an object stream, RC4 encryption, LZW, RunLength).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest

from app.cli import main
from ragtune.errors import BadInputError
from ragtune.ingest_gate import IngestLimits, UploadLimits, check_batch, screen_bytes
from ragtune.pdf_streams import _unlzw, check_pdf_streams
from retrieval.documents import list_documents
from retrieval.ingest import ingest_paths

MB = 1 << 20
OPERATORS = b"BT /F1 12 Tf 72 700 Td (x) Tj ET\n"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
REFUSED_EXTRA_MB = 150  # peak RSS above the start; ingesting the bomb took 4 GB before the check


# ------------------------------------------------------------------ building PDFs

def deflated(mb: int, unit: bytes = OPERATORS, head: bytes = b"BT /F1 12 Tf 72 720 Td (Hello bomb) Tj ET\n") -> bytes:
    """`head` then `mb` MB of `unit`, deflated at level 9 (about 1000x smaller)."""
    packer = zlib.compressobj(9)
    block = unit * (MB // len(unit))
    return packer.compress(head) + b"".join(packer.compress(block) for _ in range(mb)) + packer.flush()


def stream(body: bytes, extra: bytes = b"/Filter /FlateDecode") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(body), extra) + body + b"\nendstream"


def page(contents: bytes = b"/Contents 4 0 R") -> bytes:
    return (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] %s "
            b"/Resources << /Font << /F1 5 0 R >> >> >>" % contents)


def pdf(objects: dict[int, bytes], packed: tuple[int, ...] = (), trailer: bytes = b"", labels: bytes = b"") -> bytes:
    """A PDF of numbered objects with a cross-reference table, or a cross-reference stream when some
    objects are `packed` in an object stream (PDF 1.5) whose dictionary also holds `labels`."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", **objects}
    out, where = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"), {}
    for number, body in sorted(objects.items()):
        if number not in packed:
            where[number] = (1, len(out), 0)
            out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    size = max(objects) + 1
    if not packed:
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % size
        out += b"".join(b"%010d 00000 n \n" % where[n][1] if n in where else b"0000000000 65535 f \n"
                        for n in range(1, size))
        return bytes(out + b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (size, trailer, xref))
    bodies = [objects[n] for n in packed]
    offsets, at = [], 0
    for number, body in zip(packed, bodies):
        offsets.append(b"%d %d" % (number, at))
        at += len(body) + 1
    header = b" ".join(offsets) + b"\n"
    box, xref_number = size, size + 1
    where.update({n: (2, box, i) for i, n in enumerate(packed)})
    where[box] = (1, len(out), 0)
    out += b"%d 0 obj\n%s\nendobj\n" % (box, stream(zlib.compress(header + b"\n".join(bodies) + b"\n"),
                                                      b"/Type /ObjStm /N %d /First %d /Filter /FlateDecode %s"
                                                      % (len(packed), len(header), labels)))
    where[xref_number] = (1, len(out), 0)
    rows = b"".join(struct.pack(">BIH", *where.get(n, (0, 0, 0))) for n in range(xref_number + 1))
    xref = len(out)
    out += b"%d 0 obj\n%s\nendobj\n" % (xref_number, stream(rows, b"/Type /XRef /Size %d /W [1 4 2] /Root 1 0 R %s"
                                                            % (xref_number + 1, trailer)))
    return bytes(out + b"startxref\n%d\n%%%%EOF\n" % xref)


def one_page(content: bytes, extra: bytes = b"/Filter /FlateDecode") -> bytes:
    return pdf({3: page(), 4: stream(content, extra), 5: FONT})


PASSWORD_PAD = b"(\xbfN^Nu\x8aAd\x00NV\xff\xfa\x01\x08..\x00\xb6\xd0h>\x80/\x0c\xa9\xfedSiz"


def rc4(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher

    return Cipher(ARC4(key), mode=None).encryptor().update(data)


def rc4_security(doc_id: bytes, owner_password: bytes) -> tuple[bytes, bytes]:
    """(encryption dictionary, file key) for RC4 128 bits, revision 3, no user password."""
    permissions = -4
    owner_key = hashlib.md5(owner_password + PASSWORD_PAD[:32 - len(owner_password)]).digest()
    for _ in range(50):
        owner_key = hashlib.md5(owner_key).digest()
    owner = rc4(owner_key, PASSWORD_PAD)
    for i in range(1, 20):
        owner = rc4(bytes(b ^ i for b in owner_key), owner)
    key = hashlib.md5(PASSWORD_PAD + owner + struct.pack("<i", permissions) + doc_id).digest()
    for _ in range(50):
        key = hashlib.md5(key).digest()
    user = rc4(key, hashlib.md5(PASSWORD_PAD + doc_id).digest())
    for i in range(1, 20):
        user = rc4(bytes(b ^ i for b in key), user)
    return (b"<< /Filter /Standard /V 2 /R 3 /Length 128 /P %d /O <%s> /U <%s> >>"
            % (permissions, owner.hex().encode(), (user + b"\0" * 16).hex().encode()), key)


def rc4_encrypted(content: bytes, decoy: bool = False) -> bytes:
    """One page whose content stream is RC4-encrypted with no user password, as the NTSB reports are:
    PDFium opens it without asking, and decrypts before it inflates. `decoy`: a second trailer after
    the end, naming another key, which PDFium never reads."""
    doc_id = hashlib.md5(b"bomb").digest()
    encrypt, key = rc4_security(doc_id, b"owner")
    object_key = hashlib.md5(key + struct.pack("<L", 4)[:3] + b"\0\0").digest()
    data = pdf({3: page(), 4: stream(rc4(object_key, content)), 5: FONT, 6: encrypt},
               trailer=b"/Encrypt 6 0 R /ID [<%s> <%s>]" % (doc_id.hex().encode(), doc_id.hex().encode()))
    if decoy:
        other = hashlib.md5(b"decoy").digest()
        data += b"7 0 obj\n%s\nendobj\ntrailer\n<< /Size 8 /Root 1 0 R /Encrypt 7 0 R /ID [<%s> <%s>] >>\n" % (
            rc4_security(other, b"decoy")[0], other.hex().encode(), other.hex().encode())
    return data


class Bits:
    """Codes of varying width, packed most significant bit first."""

    def __init__(self):
        self.value, self.count = 0, 0

    def write(self, code: int, width: int) -> None:
        self.value, self.count = self.value << width | code, self.count + width

    def bytes(self) -> bytes:
        pad = -self.count % 8
        return (self.value << pad).to_bytes((self.count + pad) // 8, "big")


def lzw(data: bytes) -> bytes:
    """LZW as PDF writes it (early change), to test the decoder on a stream it did not write. The
    decoder's table is one entry behind the encoder's, which sets the width of each code."""
    def fresh():
        return {bytes([i]): i for i in range(256)}

    table, word, out = fresh(), b"", Bits()
    out.write(256, 9)
    for byte in data:
        grown = word + bytes([byte])
        if grown in table:
            word = grown
            continue
        out.write(table[word], min(12, (len(table) + 2).bit_length()))
        table[grown] = len(table) + 2
        word = bytes([byte])
        if len(table) + 2 >= 4094:
            out.write(256, 12)
            table = fresh()
    if word:
        out.write(table[word], min(12, (len(table) + 2).bit_length()))
    out.write(257, min(12, (len(table) + 3).bit_length()))
    return out.bytes()


def lzw_bomb(mb: int) -> bytes:
    """Codes that each name the entry being made, one byte longer than the last: ~7 MB per table."""
    out, total = Bits(), 0
    while total < mb * MB:
        out.write(256, 12 if total else 9)
        out.write(32, 9)
        for size in range(258, 4094):  # the decoder's table size before each code
            out.write(size, min(12, (size + 1).bit_length()))
            total += size - 256
    out.write(257, 12)
    return out.bytes()


def run_length(data: bytes) -> bytes:
    """RunLength with the longest runs (128 equal bytes in 2): at most 64x smaller."""
    out = bytearray()
    for at in range(0, len(data), 128):
        out += bytes([129]) + data[at:at + 1] if data[at:at + 128] == data[at:at + 1] * 128 else \
            bytes([len(data[at:at + 128]) - 1]) + data[at:at + 128]
    return bytes(out + b"\x80")


# ------------------------------------------------------------------ the tests

def _json(capsys, argv) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def _stored_files(ws) -> set[str]:
    return {p.name for sub in ("documents", "chunks") for p in ws.path(sub).iterdir()}


def test_cli_refuses_a_pdf_content_stream_bomb(capsys, workspace, sample_docs, rss_watch, tmp_path):
    ws = ["--workspace", str(workspace.root)]
    code, _ = _json(capsys, ["ingest", str(sample_docs / "faq.md"), "--json", *ws])  # warm: tokenizer loaded
    assert code == 0
    before = _stored_files(workspace)
    bomb = tmp_path / "report.pdf"
    bomb.write_bytes(one_page(deflated(256)))
    assert bomb.stat().st_size < 900_000
    with rss_watch() as watch:
        code, out = _json(capsys, ["ingest", str(bomb), "--json", *ws])
    print(f"CLI PDF bomb refusal: {watch.elapsed_s:.3f} s, +{watch.extra_mb:.0f} MB peak RSS")
    (result,) = out["results"]
    assert code == 1 and result["status"] == "failed", result
    assert result["reason"] == ("'report.pdf' has a stream compressed more than 100x, more than a real document "
                                "reaches; refused as a possible decompression bomb.")
    assert [d["name"] for d in list_documents(workspace)] == ["faq.md"]
    assert _stored_files(workspace) == before
    assert watch.extra_mb < REFUSED_EXTRA_MB


def _image_labelled() -> bytes:
    return b"/Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceGray /BitsPerComponent 8"


DISGUISES = {
    "spaces": lambda: one_page(deflated(64, b" ")),
    "flate twice": lambda: one_page(zlib.compress(deflated(64), 9), b"/Filter [/FlateDecode /Fl]"),
    "an image label on the page's contents": lambda: one_page(deflated(64), b"/Filter /FlateDecode " + _image_labelled()),
    "escaped names": lambda: pdf({3: page(b"/Cont#65nts 4 0 R"), 5: FONT,
                                  4: stream(deflated(64), b"/Filt#65r /Flat#65Decode /Subtype /Im#61ge")}),
    "an indirect contents array": lambda: pdf({3: page(b"/Contents 6 0 R"), 5: FONT, 6: b"[4 0 R]",
                                               4: stream(deflated(64), b"/Filter /FlateDecode " + _image_labelled())}),
    "a page in an object stream": lambda: pdf({3: page(), 5: FONT, 4: stream(deflated(64), b"/Filter /FlateDecode "
                                                                                         + _image_labelled())},
                                              packed=(2, 3)),
    "a page in an object stream labelled an image": lambda: pdf({3: page(), 5: FONT, 4: stream(
        deflated(64), b"/Filter /FlateDecode " + _image_labelled())}, packed=(2, 3), labels=b"/Subtype /Image"),
    "RC4 encryption": lambda: rc4_encrypted(deflated(64)),
    "RC4 encryption and a decoy trailer": lambda: rc4_encrypted(deflated(64), decoy=True),
    "LZW": lambda: one_page(lzw_bomb(64), b"/Filter /LZWDecode"),
    "ASCII85 around Flate": lambda: one_page(__import__("base64").a85encode(deflated(64)) + b"~>",
                                             b"/Filter [/A85 /FlateDecode]"),
}


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
def test_a_disguised_pdf_bomb_is_refused(disguise, rss_watch):
    data = DISGUISES[disguise]()
    assert len(data) < 700_000
    with rss_watch() as watch, pytest.raises(BadInputError, match="refused as a possible decompression bomb") as err:
        screen_bytes("bomb.pdf", data, IngestLimits())
    print(f"{disguise}: refused in {watch.elapsed_s:.3f} s, +{watch.extra_mb:.0f} MB")
    assert "\n" not in str(err.value) and watch.extra_mb < REFUSED_EXTRA_MB
    with pytest.raises(BadInputError, match="nothing was stored: .*decompression bomb"):
        check_batch([("bomb.pdf", data)], UploadLimits())  # the HTTP upload route's check


def test_streams_under_the_ratio_cap_still_count_against_the_total():
    data = one_page(run_length(b" " * (8 * MB)), b"/Filter /RunLengthDecode")
    assert check_pdf_streams("ok.pdf", data, 16 * MB, 100) == 8 * MB  # 64x: under the ratio cap
    with pytest.raises(BadInputError, match=r"decode to more than 4 MB \(images aside\)"):
        screen_bytes("runs.pdf", data, IngestLimits(max_pdf_decoded_mb=4))


def test_the_decoders_agree_with_pdfminer():
    from pdfminer.lzw import lzwdecode
    from pdfminer.runlength import rldecode

    text = b"".join(b"BT /F1 %d Tf (line %d of the page) Tj ET\n" % (i % 13, i) for i in range(5000))
    assert lzwdecode(lzw(text)) == text == b"".join(_unlzw(iter([lzw(text)])))
    bomb = lzw_bomb(4)
    assert b"".join(_unlzw(iter([bomb[i:i + 999] for i in range(0, len(bomb), 999)]))) == lzwdecode(bomb)
    assert rldecode(run_length(text)) == text
    for name, body, extra in [("lzw", lzw(text), b"/Filter /LZWDecode"), ("rl", run_length(text), b"/Filter /RL"),
                              ("flate", zlib.compress(text), b"/Filter /FlateDecode"), ("plain", text, b"")]:
        assert check_pdf_streams(name, one_page(body, extra), 64 * MB, 100) == len(text), name


def test_an_encrypted_pdf_is_measured_decrypted_and_still_opens():
    import pypdfium2 as pdfium

    content = deflated(0, head=b"BT /F1 12 Tf 72 720 Td (Hello encrypted) Tj ET\n")
    data = rc4_encrypted(content)
    assert check_pdf_streams("enc.pdf", data, 64 * MB, 100) == check_pdf_streams("plain.pdf", one_page(content), 64 * MB, 100)
    for built in (data, rc4_encrypted(content, decoy=True)):  # PDFium opens both without a password
        assert pdfium.PdfDocument(built)[0].get_textpage().get_text_bounded().strip() == "Hello encrypted"


def test_images_are_not_decoded_and_their_pdf_goes_in(workspace, tmp_path, rss_watch):
    """A 256 MB (decoded) image is drawn, not parsed: PDFium never inflates it to read the text."""
    side = 9459  # 9459 x 9459 RGB: 256 MB
    picture = deflated(256, b"\xff", head=b"")
    content = zlib.compress(b"BT /F1 12 Tf 72 720 Td (Hello image) Tj ET q 612 0 0 792 0 0 cm /Im1 Do Q\n")
    path = tmp_path / "poster.pdf"
    path.write_bytes(pdf({3: page(b"/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >>"),
                          4: stream(content), 5: FONT,
                          6: stream(picture, b"/Filter /FlateDecode /Type /XObject /Subtype /Image /Width %d /Height %d "
                                             b"/ColorSpace /DeviceRGB /BitsPerComponent 8" % (side, side))}))
    with rss_watch() as watch:
        (result,) = ingest_paths(workspace, [path])
    assert result.status == "added" and result.chunks >= 1, result
    assert watch.extra_mb < REFUSED_EXTRA_MB


def test_real_pdfs_pass_and_go_in(shared_corpora, sample_docs, workspace):
    pdfs = sorted(shared_corpora.rglob("*.pdf")) + sorted(sample_docs.rglob("*.pdf"))
    assert len(pdfs) >= 40
    largest = max(check_pdf_streams(p.name, p.read_bytes(), 32 * MB, 100) for p in pdfs)
    print(f"largest decoded total among {len(pdfs)} real PDFs: {largest / MB:.2f} MB")
    assert largest < 4 * MB  # the limits (64 MB, 32 MB for uploads) are far above what real PDFs decode to
    ntsb = sorted((shared_corpora / "ntsb-reports").rglob("*.pdf"))[0]  # RC4-encrypted, no user password
    nih = sorted((shared_corpora / "nih-protocols").rglob("*.pdf"))[0]
    results = ingest_paths(workspace, [ntsb, nih], limits=UploadLimits(), all_or_nothing=True)
    assert [r.status for r in results] == ["added", "added"] and all(r.chunks > 0 for r in results), results


def test_a_pdf_of_countless_tiny_streams_is_refused_before_it_costs_a_parse_each():
    tiny = b"1 0 obj\n<< /Length 0 >>\nstream\n\nendstream\nendobj\n"
    data = b"%PDF-1.4\n" + tiny * (19 * MB // len(tiny))  # 400,000 streams in an upload-sized file
    with pytest.raises(BadInputError, match="holds more than 10000 streams"):
        check_batch([("tiny.pdf", data)], UploadLimits())
