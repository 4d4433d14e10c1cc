"""HTML: the main content's headings, paragraphs, lists and tables; scripts, navigation and hidden parts left out."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from .document import Block, ParsedDocument, heading_path
from .encoding import decode_bytes
from .tables import table_or_lines

_SKIP_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template", "iframe")


def parse_html_text(html: str) -> ParsedDocument:
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML and inline-XBRL filings
        soup = BeautifulSoup(html, "lxml")
    for tag in soup(_SKIP_TAGS):
        tag.decompose()
    for tag in soup.find_all(style=re.compile(r"display:\s*none", re.I)):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    body = soup.find("main") or soup.find("article") or soup.body or soup
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    block_tags = {"p", "li", "pre", "blockquote", "dd", "dt", "td", "th", "caption", "figcaption"}

    def walk(node):
        nonlocal headings
        for child in node.children:
            name = getattr(child, "name", None)
            if name is None:
                text = str(child).strip()
                if text and node is body:
                    blocks.append(Block(" ".join(text.split()), None, heading_path(headings)))
                continue
            if re.fullmatch(r"h[1-6]", name):
                text = child.get_text(" ", strip=True)
                if text:
                    level = int(name[1])
                    headings = [h for h in headings if h[0] < level] + [(level, text)]
                    blocks.append(Block(text, None, heading_path(headings), "heading"))
            elif name == "table":
                trs = [tr for tr in child.find_all("tr") if tr.get_text(strip=True)]
                rows = [[" ".join(c.get_text(" ", strip=True).split()) for c in tr.find_all(["td", "th"])] for tr in trs]
                if rows:
                    first = trs[0].find_all(["td", "th"])
                    header = True if first and all(c.name == "th" for c in first) else None
                    blocks.append(table_or_lines(rows, None, heading_path(headings), header))
            elif name in ("ul", "ol"):
                items = [" ".join(li.get_text(" ", strip=True).split()) for li in child.find_all("li")]
                items = [i for i in items if i]
                if items:
                    blocks.append(Block("\n".join("- " + i for i in items), None, heading_path(headings), "list"))
            elif name in block_tags or not any(getattr(c, "name", None) for c in child.children):
                text = " ".join(child.get_text(" ", strip=True).split())
                if text:
                    blocks.append(Block(text, None, heading_path(headings)))
            else:
                walk(child)

    walk(body)
    return ParsedDocument("html", blocks, title=title)


def parse_html(path: Path) -> ParsedDocument:
    return parse_html_text(decode_bytes(path.read_bytes()))
