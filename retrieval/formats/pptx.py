"""PowerPoint (PPTX): a slide is a page, its title the section of its text, tables and notes."""

from __future__ import annotations

from pathlib import Path

from ragtune.errors import BadInputError

from ..office import check_pptx
from .document import Block, ParsedDocument
from .tables import table_or_lines


def parse_pptx(path: Path, max_pages: int | None = None) -> ParsedDocument:
    from pptx import Presentation

    try:
        deck = Presentation(str(path))
    except Exception as exc:
        raise BadInputError(f"the PPTX file is damaged and cannot be opened ({type(exc).__name__})") from None
    slides = list(deck.slides)
    if max_pages and len(slides) > max_pages:
        raise BadInputError(f"the presentation has {len(slides)} slides, more than the limit of {max_pages}")
    check_pptx(slides)
    blocks: list[Block] = []
    for number, slide in enumerate(slides, start=1):
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else None
        if title:
            blocks.append(Block(title, number, title, "heading"))
        for shape in slide.shapes:
            if shape is title_shape:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[" ".join(c.text.split()) for c in r.cells] for r in shape.table.rows]
                if rows:
                    blocks.append(table_or_lines(rows, number, title))
            elif shape.has_text_frame:
                paras = [p.text.strip() for p in shape.text_frame.paragraphs if p.text.strip()]
                if paras:
                    kind = "list" if len(paras) > 1 else "paragraph"
                    text = "\n".join(("- " + p) if kind == "list" else p for p in paras)
                    blocks.append(Block(text, number, title, kind))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                blocks.append(Block(notes, number, title, "paragraph"))
    return ParsedDocument("pptx", blocks, pages=len(slides))
