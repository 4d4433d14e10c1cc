"""The one gate every document passes before it is parsed: CLI, builder app and HTTP upload alike.

What is refused, with a sentence saying why:
- too many files in one request, a file or a request too large, a document with too many pages;
- names that try to be paths (``../x``, ``a/b``, ``C:\\x``), control characters, hidden names;
  accepted upload names are still never used as paths: files are staged under generated folders
  with a cleaned name, and only the cleaned name reaches the document store;
- links whose target is outside the folder being ingested, files of a folder with hard links the
  folder does not hold (one may be /etc/passwd), and special files (FIFOs, devices, sockets), which
  are never opened; control and bidi characters are stripped from the names of local files;
- archive bombs in zip-based files (DOCX, PPTX, XLSX, EPUB, ... anything that starts like a zip):
  too many entries, too much data once decompressed, or a compression ratio no real document has.
  Entries are decompressed in a streaming loop with a budget, and the ratio is checked while
  streaming, so a bomb is refused after about a megabyte of work and a header that lies about
  sizes does not help;
- PDF decompression bombs: every stream that text extraction decodes is decoded here first in the
  same kind of budgeted loop (``ragtune.pdf_streams``), before PDFium or pdfminer sees the file;
- PDFs that are corrupt, not PDFs at all, or password-protected; spreadsheets; text formats that
  hold binary data; file types ragtune does not read (upload checks).

A request is all or nothing: the caller (``retrieval.ingest.ingest_paths(all_or_nothing=True)``)
stores nothing when any file is refused here or fails to parse.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import struct
import time
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from .errors import BadInputError
from .jobs import list_jobs, pid_alive
from .pdf_streams import check_pdf_streams
from .pdfium_lock import PDFIUM_LOCK

MB = 1024 * 1024
TEXT_EXTENSIONS = (".md", ".markdown", ".txt", ".html", ".htm", ".csv", ".rtf", ".eml", ".json", ".jsonl")
ZIP_EXTENSIONS = (".docx", ".pptx", ".xlsx")
DEFAULT_EXTENSIONS = (".pdf", *ZIP_EXTENSIONS, *TEXT_EXTENSIONS)
ZIP_MAGIC = b"PK\x03\x04"
# A part may be this large before its compression ratio is judged: tiny parts compress oddly.
RATIO_GRACE_BYTES = MB
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE_CHARS = re.compile(r"[^\w.\- ()+,&@]", re.UNICODE)
# C0 and C1 controls, DEL, and the bidi marks, embeddings, overrides and isolates.
_NAME_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass
class IngestLimits:
    """Limits for documents read from this machine (CLI, builder app)."""

    max_file_mb: float = 200.0
    max_pages: int = 5000
    max_files: int = 10_000
    max_total_mb: float | None = None     # per request; None: no total limit
    max_uncompressed_mb: float = 512.0    # per zip-based file, once decompressed
    max_compression_ratio: float = 100.0  # real DOCX/PPTX XML compresses ~5-20x
    max_archive_entries: int = 10_000
    # Per PDF, what its streams decode to, images aside (PDFium never decodes those for text), and how
    # many streams it holds. The 48 real PDFs under /work/shared/corpora and datasets/ decode to 1.9 MB
    # at most (0.27 MB a page; no stream over 12.5x) in 149 streams at most (12 a page): the caps are
    # far above, while PDFium parses a content stream at about 16 MB of memory per MB.
    max_pdf_decoded_mb: float = 64.0
    max_pdf_streams: int = 50_000
    max_name_chars: int = 120
    allowed_extensions: tuple[str, ...] = field(default=DEFAULT_EXTENSIONS)
    # Each file is parsed in a child process (retrieval/parse_worker.py), killed past either limit: memory
    # beyond what the worker holds once started (~20 MB of address space), and seconds per file; None: no
    # limit. The files under /work/shared/corpora parse in 143 MB of worker RSS at most (bench/parse_worker.py),
    # while 2 MB of HTML paragraphs takes 8-12 s and +250 MB, and 20 MB ten times that.
    parse_memory_mb: float | None = 2048.0
    parse_timeout_s: float | None = 120.0
    parse_isolated: bool = True  # False: parse in this process with no limit (bench/parse_worker.py's baseline)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)


@dataclass
class UploadLimits(IngestLimits):
    """Tighter limits for files that arrive over HTTP from someone else's machine."""

    max_file_mb: float = 20.0
    max_files: int = 20
    max_total_mb: float | None = 100.0
    max_pages: int = 500
    max_uncompressed_mb: float = 100.0
    max_archive_entries: int = 5000
    max_pdf_decoded_mb: float = 32.0
    max_pdf_streams: int = 10_000
    parse_memory_mb: float | None = 1024.0
    parse_timeout_s: float | None = 60.0


@dataclass
class CheckedFile:
    original_name: str
    safe_name: str
    size: int
    kind: str
    pages: int | None = None


@dataclass
class Found:
    """A file named by the user or found in a folder; `problem` says why it is refused, if it is."""

    path: Path
    name: str
    problem: str | None = None
    identity: tuple[int, int] | None = None  # (device, inode) as judged: another file put in its place is not read


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


# ------------------------------------------------------------------ names and streams

def safe_filename(name: str, max_chars: int = 120) -> str:
    """A display name safe to store: a single plain component, or BadInputError for path-like names."""
    if not isinstance(name, str) or not name.strip():
        raise BadInputError("A file was sent without a name.")
    raw = unicodedata.normalize("NFKC", name)
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in raw):
        raise BadInputError("A file name contains control characters; rename the file and upload it again.")
    parts = re.split(r"[\\/]", raw)
    if len(parts) > 1 or raw.strip() in (".", "..") or re.match(r"^[A-Za-z]:", raw):
        raise BadInputError(f"The file name {name!r} looks like a path (it contains folders or '..'); "
                            "upload the file itself under a plain name.")
    cleaned = _UNSAFE_CHARS.sub("_", raw.strip()).rstrip(" .")
    if not cleaned or cleaned.startswith("."):
        raise BadInputError(f"The file name {name!r} is empty or hidden once cleaned; give the file a normal name.")
    stem, dot, ext = cleaned.rpartition(".")
    if not dot:
        stem, ext = cleaned, ""
    if stem.lower() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    ext = ext[:16]
    stem = stem[: max(1, max_chars - len(ext) - 1)]
    return f"{stem}.{ext}" if ext else stem


def read_limited(stream: BinaryIO, max_bytes: int, name: str = "the file", chunk: int = 1 << 20) -> bytes:
    """Read at most `max_bytes` from a binary stream; refuse bigger files without reading them whole."""
    buf = io.BytesIO()
    while True:
        block = stream.read(chunk)
        if not block:
            return buf.getvalue()
        if buf.tell() + len(block) > max_bytes:
            raise BadInputError(f"'{name}' is larger than the {_mb(max_bytes)} limit per file; split it or "
                                "raise the limit in the deploy settings.")
        buf.write(block)


# ------------------------------------------------------------------ archives

def check_archive(name: str, data: bytes, limits: IngestLimits, ext: str = "") -> int | None:
    """Refuse a zip-based file that would decompress into a bomb; returns its slide count for PPTX.

    Nothing is parsed: entries are streamed through zlib with a budget, never held whole.
    """
    label = ext[1:].upper() if ext else "zip-based"
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise BadInputError(f"'{name}' is not a valid {label} file (the zip container is damaged: {exc}).") from None
    if len(entries) > limits.max_archive_entries:
        raise BadInputError(f"'{name}' holds {len(entries)} parts, more than the {limits.max_archive_entries} "
                            "a real document has; refused as a possible archive bomb.")
    budget = int(limits.max_uncompressed_mb * MB)
    declared = sum(e.file_size for e in entries)
    if declared > budget:
        raise BadInputError(f"'{name}' would expand to {_mb(declared)}, over the {limits.max_uncompressed_mb:.0f} MB "
                            "limit; refused as a possible archive bomb.")
    guard = _Budget(name, budget, limits.max_compression_ratio)
    for entry in entries:
        if entry.is_dir():
            continue
        guard.start(entry)
        try:
            if entry.compress_type == zipfile.ZIP_DEFLATED:
                _inflate(data, entry, guard)
            else:  # stored, bzip2, lzma: rare in documents; judged on the entry's whole compressed size
                with archive.open(entry) as member:
                    while block := member.read(1 << 16):
                        guard.add(len(block), max(min(entry.compress_size, len(data)), 1))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
                struct.error) as exc:
            raise BadInputError(f"'{name}' has a damaged or unreadable part ({entry.filename}: {exc}).") from None
    names = {e.filename for e in entries}
    if ext == ".xlsx" or "xl/workbook.xml" in names:  # judged after the bomb checks: a bomb is said to be one
        raise BadInputError(f"'{name}': spreadsheets (.xlsx) are not supported: save the sheet as CSV.")
    if ext == ".pptx" or "ppt/presentation.xml" in names:
        return sum(1 for n in names if re.fullmatch(r"ppt/slides/slide\d+\.xml", n))
    return None


class _Budget:
    """Bytes inflated so far, per part and per archive, against the caps; raises on the first excess."""

    def __init__(self, name: str, budget: int, max_ratio: float):
        self.name, self.budget, self.max_ratio = name, budget, max_ratio
        self.total = 0

    def start(self, entry: zipfile.ZipInfo) -> None:
        self.entry, self.seen = entry, 0

    def add(self, inflated: int, consumed: int) -> None:
        self.seen += inflated
        self.total += inflated
        if self.total > self.budget or self.seen > self.entry.file_size:
            raise BadInputError(f"'{self.name}' expands beyond its declared or allowed size; "
                                "refused as a possible archive bomb.")
        if self.seen > RATIO_GRACE_BYTES and self.seen / max(consumed, 1) > self.max_ratio:
            raise BadInputError(f"'{self.name}' has a part compressed more than {self.max_ratio:.0f}x, more than "
                                "a real document reaches; refused as a possible archive bomb.")


def _inflate(data: bytes, entry: zipfile.ZipInfo, guard: _Budget) -> None:
    """Inflate one deflated part from its raw bytes, judging the ratio on the compressed bytes read so far.

    zipfile only exposes the ratio of the whole part, which lets a 400 MB bomb inflate 40 MB before it shows.
    """
    offset = entry.header_offset
    if data[offset:offset + 4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local header")
    name_len, extra_len = struct.unpack("<HH", data[offset + 26:offset + 30])
    start = offset + 30 + name_len + extra_len
    raw = memoryview(data)[start:start + entry.compress_size]
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    fed = 0
    while not inflater.eof:
        if inflater.unconsumed_tail:
            chunk = inflater.unconsumed_tail
        elif fed < len(raw):
            chunk = raw[fed:fed + (1 << 14)]
            fed += len(chunk)
        else:
            raise zipfile.BadZipFile("the compressed data ends early")
        out = inflater.decompress(chunk, 1 << 16)
        guard.add(len(out), fed - len(inflater.unconsumed_tail))


def _check_pdf(name: str, data: bytes) -> int:
    if b"%PDF-" not in data[:1024]:
        raise BadInputError(f"'{name}' is not a PDF (it does not start with a PDF header); export it again as PDF.")
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise BadInputError(f"'{name}' is password-protected; remove the password and upload it again.") from None
            raise BadInputError(f"'{name}' is a damaged PDF that cannot be read ({exc}); export it again.") from None
        try:
            return len(pdf)
        finally:
            pdf.close()


def check_pdf_bombs(name: str, data: bytes, limits: IngestLimits) -> None:
    """Refuse a PDF whose streams decode to more than the limit, or inflate more than a real one does."""
    check_pdf_streams(name, data, int(limits.max_pdf_decoded_mb * MB), limits.max_compression_ratio,
                      limits.max_pdf_streams)


def screen_bytes(name: str, data: bytes, limits: IngestLimits) -> int | None:
    """The checks every file gets before parsing, whatever its route: size, archive and PDF bombs, slide count.

    Files are judged by their bytes, as the parser will read them: a PDF named .txt is screened as a PDF.
    """
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"the file is {len(data) / MB:.1f} MB, more than the limit of {limits.max_file_mb:g} MB")
    if b"%PDF-" in data[:1024]:
        check_pdf_bombs(name, data, limits)
    if not data.startswith(ZIP_MAGIC):
        return None
    pages = check_archive(name, data, limits, Path(name).suffix.lower())
    if pages is not None and pages > limits.max_pages:
        raise BadInputError(f"'{name}' has {pages} pages, over the limit of {limits.max_pages}; split it.")
    return pages


# ------------------------------------------------------------------ uploads (bytes from HTTP)

def check_file(name: str, data: bytes, limits: IngestLimits | None = None) -> CheckedFile:
    """Validate one uploaded file; raises BadInputError with a sentence for the user."""
    limits = limits or UploadLimits()
    safe = safe_filename(name, limits.max_name_chars)
    ext = Path(safe).suffix.lower()
    if ext not in limits.allowed_extensions:
        raise BadInputError(f"'{safe}' is a {ext or 'extension-less'} file, which ragtune does not read. "
                            f"Supported: {', '.join(limits.allowed_extensions)}.")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"'{safe}' is {_mb(len(data))}, over the {limits.max_file_mb:.0f} MB limit per file.")
    if not data:
        raise BadInputError(f"'{safe}' is empty.")
    pages = None
    if ext == ".pdf":
        kind = "pdf"
        check_pdf_bombs(safe, data, limits)
        pages = _check_pdf(safe, data)
    elif ext in ZIP_EXTENSIONS:
        kind = ext[1:]
        pages = check_archive(safe, data, limits, ext)
        if "[Content_Types].xml" not in zipfile.ZipFile(io.BytesIO(data)).namelist():
            raise BadInputError(f"'{safe}' is a zip file but not a {ext[1:].upper()} document (no [Content_Types].xml).")
    else:
        kind = "text"
        if data[:4] == ZIP_MAGIC or b"\x00" in data[:65536]:
            raise BadInputError(f"'{safe}' should be text ({ext}) but holds binary data; check the file type.")
    if pages is not None and pages > limits.max_pages:
        raise BadInputError(f"'{safe}' has {pages} pages, over the limit of {limits.max_pages}; split it.")
    return CheckedFile(original_name=name, safe_name=safe, size=len(data), kind=kind, pages=pages)


def check_batch(files: list[tuple[str, bytes]], limits: IngestLimits | None = None) -> list[CheckedFile]:
    """Check a whole upload; raises one BadInputError listing every refused file (nothing is stored)."""
    limits = limits or UploadLimits()
    if not files:
        raise BadInputError("No files were uploaded.")
    if len(files) > limits.max_files:
        raise BadInputError(f"{len(files)} files were uploaded at once; the limit is {limits.max_files}. Upload them in smaller batches.")
    total = sum(len(d) for _, d in files)
    if limits.max_total_mb is not None and total > limits.max_total_mb * MB:
        raise BadInputError(f"This upload totals {_mb(total)}, over the {limits.max_total_mb:.0f} MB limit per upload.")
    checked, problems = [], []
    for name, data in files:
        try:
            checked.append(check_file(name, data, limits))
        except BadInputError as exc:
            problems.append(str(exc))
    if problems:
        raise BadInputError("Upload refused, nothing was stored: " + " ".join(problems))
    return checked


STAGING = "staging"
STAGING_GRACE_S = 600  # a staging folder with no job yet, whose creator lives: kept this long (staged, job starting)


def new_staging(ws) -> Path:
    """A folder of its own in the workspace's staging area for one upload, marked with the process that
    made it. The ingest job started for the upload owns it and removes it when it ends (``remove_staging``);
    what a crash leaves is removed by ``sweep_staging``."""
    import json
    import secrets
    import time

    root = ws.path(STAGING)
    root.mkdir(mode=0o700, exist_ok=True)
    folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"
    folder.mkdir(mode=0o700)
    (folder / ".owner").write_text(json.dumps({"pid": os.getpid(), "created": time.time()}))
    return folder


def remove_staging(ws, folder: str | Path) -> bool:
    """Remove one staging folder; a path that is not a folder of the staging area is left alone."""
    import shutil

    folder = Path(folder)
    try:
        if folder.is_symlink() or folder.resolve().parent != ws.path(STAGING).resolve():
            return False
    except OSError:
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


def sweep_staging(ws) -> list[str]:
    """Remove the staging folders nothing will read any more: their job ended (however: a job killed
    before its cleanup, a server stopped mid-upload), or no job ever started and their creator is gone
    (or has had STAGING_GRACE_S). Returns the names removed."""
    root = ws.path(STAGING)
    if not root.is_dir():
        return []
    running, ended = set(), set()
    for job in list_jobs(ws, kind="ingest"):
        staged = ((job.config or {}).get("config") or {}).get("staged")
        if staged:
            (ended if job.finished else running).add(Path(staged).name)
    removed = []
    for folder in root.iterdir():
        if folder.name in running or not folder.is_dir():
            continue
        if folder.name not in ended:
            try:
                owner = json.loads((folder / ".owner").read_text())
                alive = pid_alive(int(owner["pid"]))
                young = time.time() - float(owner["created"]) < STAGING_GRACE_S
            except (OSError, ValueError, KeyError, TypeError):
                alive, young = False, time.time() - folder.stat().st_mtime < STAGING_GRACE_S
            if alive and young:
                continue
        if remove_staging(ws, folder):
            removed.append(folder.name)
    return removed


def stage_files(checked: list[CheckedFile], datas: list[bytes], folder: Path) -> list[Path]:
    """Write accepted files under `folder`, one generated sub-folder each, named by their cleaned names."""
    folder = Path(folder)
    paths = []
    for i, (item, data) in enumerate(zip(checked, datas)):
        sub = folder / f"{i:04d}"
        sub.mkdir(parents=True, exist_ok=False)
        target = sub / item.safe_name
        if target.resolve().parent != sub.resolve():  # belt and braces: safe_name is one component
            raise BadInputError(f"Refusing the file name {item.original_name!r}.")
        target.write_bytes(data)
        paths.append(target)
    return paths


# ------------------------------------------------------------------ files and folders on this machine

def _inside(target: Path, folder: Path) -> bool:
    return target == folder or folder in target.parents


def _judge(path: Path, folder: Path) -> str | None:
    """Why `path` (found in `folder`) must not be read, or None."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        target = path.resolve()
        if not _inside(target, folder):
            return f"it is a link to {target}, outside the folder being ingested; copy the file in instead"
        try:
            st = target.stat()
        except OSError:
            return "it is a broken link"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file (a folder, device, pipe or socket is never read)"
    return None


def display_name(name: str) -> str:
    """A file's name as it is stored and shown, without control or bidi characters: a name on disk may hold
    an escape sequence that rewrites the terminal listing it, or a right-to-left override (U+202E) that
    shows "invoice<U+202E>gnp.md" as "invoicedm.png". Uploads refuse such names (``safe_filename``); a
    local file is kept, under the cleaned name."""
    return _NAME_CONTROLS.sub("", name) or "unnamed"


def gather(paths: Iterable[str | Path]) -> list[Found]:
    """Expand files and folders (recursively, hidden names skipped) and judge each file found.

    A file named directly is judged against its own folder, a file found in a folder against that
    folder: a link may point within it, never out of it, and a file with hard links must have all of
    them in it (a file named directly is the file the user chose, whatever its other names).
    """
    found: list[Found] = []
    for given in paths:
        given = Path(given).expanduser()
        if given.is_dir():  # a folder named by the user, even through a link, is the folder being ingested
            found += _refuse_hard_links_out(_walk(given))
        else:
            found.append(Found(given, display_name(given.name), _judge(given, given.parent.resolve())))
    for item in found:
        if item.problem is None:
            try:
                st = item.path.stat()
                item.identity = (st.st_dev, st.st_ino)
            except OSError as exc:
                item.problem = f"it cannot be read ({exc.strerror or exc})"
    return found


def _walk(folder: Path) -> list[Found]:
    root, found = folder.resolve(), []
    for top, dirs, names in os.walk(folder):
        kept = []
        for d in sorted(x for x in dirs if not x.startswith(".")):
            sub = Path(top) / d
            if sub.is_symlink():  # never descended into; refuse those that leave the folder
                if not _inside(sub.resolve(), root):
                    found.append(Found(sub, display_name(d), f"it is a link to {sub.resolve()}, outside the folder "
                                                             "being ingested; copy the files in instead"))
                continue
            kept.append(d)
        dirs[:] = kept
        for n in sorted(x for x in names if not x.startswith(".")):
            path = Path(top) / n
            found.append(Found(path, display_name(n), _judge(path, root)))
    return found


def _refuse_hard_links_out(found: list[Found]) -> list[Found]:
    """Refuse the files of one folder that have more hard links than the folder holds names for.

    A hard link is the file itself, not a pointer that can be followed, so a link to /etc/passwd looks like
    any file; only the count of its names (st_nlink) shows that another name exists somewhere. Names
    counted here are the folder's own files (a symbolic link adds no name to its target).
    """
    stats, named_here = {}, {}
    for item in found:
        if item.problem is None:
            try:
                stats[id(item)] = st = item.path.stat()
            except OSError:
                continue
            if not item.path.is_symlink():
                named_here[(st.st_dev, st.st_ino)] = named_here.get((st.st_dev, st.st_ino), 0) + 1
    for item in found:
        st = stats.get(id(item))
        here = named_here.get((st.st_dev, st.st_ino), 0) if st else 0
        if st and st.st_nlink > 1 and st.st_nlink > here:
            item.problem = (f"it is a hard link: the file has {st.st_nlink} names and only {here} in the folder being "
                            "ingested, so it may be a file from outside (as a link to /etc/passwd would be); "
                            "copy the file in instead")
    return found


def read_found(item: Found, limits: IngestLimits) -> bytes:
    """The bytes of a gathered file, read without following a link swapped in after it was judged."""
    path = item.path.resolve() if item.path.is_symlink() else item.path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise BadInputError(f"it cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if item.identity is not None and (st.st_dev, st.st_ino) != item.identity:
            raise BadInputError("it changed after it was checked (another file took its name); ingest it again")
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError("it is not a regular file (a folder, device, pipe or socket is never read)")
        if st.st_size > limits.max_file_bytes:
            raise BadInputError(f"the file is {st.st_size / MB:.1f} MB, more than the limit of {limits.max_file_mb:g} MB")
        # Sized by the file, not the limit: a read of the limit's size sets aside 200 MB for every file.
        data = f.read(min(st.st_size, limits.max_file_bytes) + 1)
        if len(data) > st.st_size:  # it grew while being read: read on, up to the limit
            data += f.read(limits.max_file_bytes + 1 - len(data))
        return data
