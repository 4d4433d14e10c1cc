"""CSV and JSONL: a block per row or record, read one at a time."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from ragtune.errors import BadInputError

from .document import Block, ParsedDocument
from .encoding import open_text


def stream_csv(path: Path) -> tuple[ParsedDocument, Iterator[Block]]:
    """One block per row, written as 'column: value' pairs so each row stands alone in a chunk; the
    rows are read one at a time."""
    doc = ParsedDocument("csv", [])

    def blocks() -> Iterator[Block]:
        with path.open("rb") as raw:
            head = open_text(raw, "")
            sample = head.read(8192)
            encoding = head.encoding
            head.detach()  # `raw` stays open for the rows
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            rows = (r for r in csv.reader(open_text(raw, "", encoding), dialect) if any(c.strip() for c in r))
            header = next(rows, None)
            if header is None:
                raise BadInputError("the CSV file has no rows")
            body = False
            for r in rows:
                body = True
                pairs = [f"{h.strip() or f'column {i + 1}'}: {v.strip()}" for i, (h, v) in enumerate(zip(header, r))
                         if v.strip()]
                yield Block("; ".join(pairs), None, None, "table")
            if not body:
                yield Block(", ".join(header), None, None, "table")

    return doc, blocks()


def stream_jsonl(path: Path) -> tuple[ParsedDocument, Iterator[Block]]:
    """Each record becomes one block of its text fields, read a line at a time; malformed lines are
    skipped and counted (the document's warning, once every line is read)."""
    doc = ParsedDocument("jsonl", [])

    def blocks() -> Iterator[Block]:
        bad, first_bad, found = 0, None, False
        with path.open("rb") as raw:
            for n, line in enumerate(open_text(raw, None), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    bad, first_bad = bad + 1, first_bad or n
                    continue
                if isinstance(record, dict):
                    text = "\n".join(f"{k}: {_flat(v)}" for k, v in record.items() if _flat(v).strip())
                else:
                    text = _flat(record)
                if text.strip():
                    found = True
                    yield Block(text, None, None, "paragraph")
        if not found and bad:
            raise BadInputError(f"no line is valid JSON (first bad line: {first_bad})")
        if bad:
            doc.warnings.append(f"skipped {bad} line(s) that are not valid JSON (first: line {first_bad})")

    return doc, blocks()


def _flat(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)) or value is None:
        return "" if value is None else str(value)
    return json.dumps(value, ensure_ascii=False)
