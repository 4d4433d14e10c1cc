"""Tables as blocks whose every row names its columns, for the PDF, DOCX, PPTX and HTML parsers."""

from __future__ import annotations

from .document import Block


def table_block(rows: list[list[str | None]], page: int | None = None, section: str | None = None,
                header: bool | None = None) -> Block | None:
    """A table as one block, a line per row that names its columns ("Header: cell; Header: cell"), so
    any row read alone (one chunk of a long table) still says what its cells are. A first row with a
    single filled cell is the caption: the first line, and the block's section when short. None when fewer than two rows
    have two filled cells: a ruled box around a paragraph is not a table. ``None`` cells are spans of
    the cell to their left (pdfplumber, merged DOCX cells). ``header``: whether the first row names
    the columns (HTML ``<th>``); None judges it from the row (short, distinct words, no figures). A
    table with no header row keeps its rows as "cell | cell" lines.
    """
    rows = [r for r in rows if any(c for c in r)]
    caption = None
    if len(rows) > 1 and sum(1 for c in rows[0] if c) == 1:
        caption = next(c for c in rows[0] if c)
        rows = rows[1:]
    if sum(1 for r in rows if sum(1 for c in r if c) >= 2) < 2:
        return None
    if _is_form(rows):
        lines = [_row_text(r) for r in rows]
    elif header if header is not None else _looks_like_header(rows[0]):
        lines = _header_rows(rows)
    else:
        lines = [" | ".join(c for c in r if c) for r in rows]
    text = "\n".join([caption] * bool(caption) + [ln for ln in lines if ln])
    if caption and len(caption.split()) <= 12:  # a long single cell is a row carried over, not a title
        section = caption
    return Block(text, page, section, "table")


def _is_form(rows: list[list[str | None]]) -> bool:
    """Label cells end with a colon ("Registration:", "N5921D") in most rows, or the table has two columns."""
    width = max(sum(1 for c in r if c is not None) for r in rows)
    labelled = sum(1 for r in rows if any(c and c.endswith(":") for c in r))
    return width <= 2 or labelled * 2 >= len(rows)


def _looks_like_header(row: list[str | None]) -> bool:
    cells = [c for c in row if c]  # empty cells: spacer columns of HTML layouts
    return (len(cells) >= 2 and len(set(cells)) == len(cells)
            and all(len(c.split()) <= 8 and sum(ch.isdigit() for ch in c) * 3 < len(c) for c in cells))


def _row_text(row: list[str | None]) -> str:
    """'Label: value; Label: value' for a form row; a cell that is no label stands as it is."""
    cells = [c for c in row if c is not None]
    if len(cells) % 2 == 0 and any(c.endswith(":") for c in cells[::2]) or len(cells) == 2:
        # label, value, label, value: a label printed without its colon ("Visibility") still pairs
        return "; ".join(f"{label.rstrip(':').rstrip()}: {value}" if label else value
                         for label, value in zip(cells[::2], cells[1::2]) if value)
    parts, i = [], 0
    while i < len(cells):
        cell = cells[i]
        nxt = cells[i + 1] if i + 1 < len(cells) else None
        if cell.endswith(":") and nxt is not None and not nxt.endswith(":"):
            if nxt:
                parts.append(f"{cell.rstrip(':').rstrip()}: {nxt}")
            i += 2
            continue
        if cell and not cell.endswith(":"):
            parts.append(cell)
        i += 1
    return "; ".join(parts)


def _header_rows(rows: list[list[str | None]]) -> list[str]:
    """'Header: cell; ...' for each row after the first. A cell spanning several grid columns (the
    ``None`` cells after it) takes the header printed anywhere over its span: pdfplumber's grid often
    puts a header one column off the cells under it."""
    width = max(len(r) for r in rows)
    top = [(rows[0][i] if i < len(rows[0]) else None) or "" for i in range(width)]
    filled: list[str] = []
    for i in range(width):  # a header cell spanning columns names them all
        filled.append(top[i] or (filled[-1] if rows[0][i:i + 1] == [None] and filled else ""))
    lines = []
    for row in rows[1:]:
        pairs, seen = [], set()
        starts = [i for i, c in enumerate(row) if c is not None] + [len(row)]
        for i, j in zip(starts, starts[1:]):
            if not row[i]:
                continue
            named = [h for h in dict.fromkeys(top[i:j]) if h] or [filled[i]] if i < width else []
            h = " / ".join(named) or f"column {i + 1}"
            if (h, row[i]) not in seen:
                seen.add((h, row[i]))
                pairs.append(f"{h}: {row[i]}")
        lines.append("; ".join(pairs))
    return lines


def table_or_lines(rows: list[list[str | None]], page: int | None, section: str | None,
                   header: bool | None = None) -> Block:
    """A table block whose rows name their columns; a table of one row or one column stays as lines."""
    return table_block(rows, page, section, header) or Block(
        "\n".join(" | ".join(c for c in r if c) for r in rows if any(r)), page, section, "table")
