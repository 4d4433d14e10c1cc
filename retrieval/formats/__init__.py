"""Read a document file into ordered text blocks (heading, paragraph, list, table) with page and section.

The file type comes from the content (magic bytes, zip members, markup), never from the name alone
(:mod:`.detect`): a ``.pdf`` that holds plain text is refused with that reason, a ``.txt`` that holds
HTML is read as HTML. Each detected type has one reader in :data:`.registry.READERS`, from the module of
its family: :mod:`.pdf`, :mod:`.docx`, :mod:`.pptx`, :mod:`.html`, :mod:`.text` (Markdown and plain
text), :mod:`.records` (CSV and JSONL), :mod:`.eml` and :mod:`.rtf`. Every failure is a
:class:`~ragtune.errors.BadInputError` whose message says what is wrong with the file.

The parse worker (:mod:`retrieval.parse_child`) imports this package before it caps its memory, so
each parser imports its third-party library (pypdfium2, python-docx, BeautifulSoup...) when it runs.
"""

from .detect import detect_kind
from .document import MIME, Block, ParsedDocument
from .docx import parse_docx
from .eml import parse_eml
from .html import parse_html, parse_html_text
from .pdf import parse_pdf, strip_repeated_lines
from .pptx import parse_pptx
from .registry import READERS, ParseOptions, parse_file, stream_file
from .rtf import parse_rtf
from .tables import table_block
from .text import MAX_BLOCK_CHARS, parse_markdown_text

__all__ = [
    "MAX_BLOCK_CHARS", "MIME", "READERS", "Block", "ParseOptions", "ParsedDocument", "detect_kind", "parse_docx",
    "parse_eml", "parse_file", "parse_html", "parse_html_text", "parse_markdown_text", "parse_pdf", "parse_pptx",
    "parse_rtf", "stream_file", "strip_repeated_lines", "table_block",
]
