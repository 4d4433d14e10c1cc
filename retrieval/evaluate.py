"""Retrieval quality against gold sources: hit@k, recall@k and MRR per retriever (dense, BM25, hybrid).

Gold sources come from a row's ``doc`` / ``source`` field (with ``page``), or from citations such as
``[file.pdf#page=N]`` in its reference answer (pages are 1-based). Document metrics look at the
documents of the top-k passages; ``page_hit@5`` looks at the top five *distinct* pages, which is
what a reader checks when following citations.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ragtune.errors import BadInputError

from .settings import MODES

CITATION = re.compile(r"\[([^\[\]#]+?\.[A-Za-z0-9]{1,5})(?:#page=(\d+))?\]")
ANSWER_KEYS = ("answer", "truth", "reference", "ground_truth", "gold", "expected")
DOC_KEYS = ("doc", "source", "document", "file")


def parse_gold(value, page=None) -> list[tuple[str, int | None]]:
    """Gold sources from a row's ``doc`` value: a file name, "file.pdf#page=3", or a list of those.

    ``page`` applies to every name that does not carry its own. Raises ValueError with the reason
    when the value cannot be read (a number, an object, an empty name, a page that is not a number),
    so that no row is silently scored against a garbled source.
    """
    if isinstance(value, str) and value.strip().startswith("["):  # a list written into a CSV cell, or "[a.pdf#page=2]"
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if not CITATION.fullmatch(text):
                raise ValueError(f"'doc' {text!r} is neither a file name nor a JSON list of file names") from None
            value = text[1:-1]
    docs = value if isinstance(value, list) else [value]
    if not docs:
        raise ValueError("'doc' is an empty list")
    if page not in (None, ""):
        try:
            page = int(page)
        except (TypeError, ValueError):
            raise ValueError(f"page {page!r} is not a number") from None
    else:
        page = None
    gold: list[tuple[str, int | None]] = []
    for d in docs:
        if not isinstance(d, str) or not d.strip():
            raise ValueError(f"'doc' must be a file name or a list of file names, not {json.dumps(d)}")
        m = CITATION.fullmatch(f"[{d.strip()}]")
        if m and m.group(2):
            gold.append((Path(m.group(1)).name, int(m.group(2))))
        else:
            gold.append((Path(d.strip()).name, page))
    return list(dict.fromkeys(gold))


def gold_of(row: dict) -> list[tuple[str, int | None]]:
    gold: list[tuple[str, int | None]] = []
    for key in DOC_KEYS:
        value = row.get(key)
        if value in (None, "", []):
            continue
        gold = parse_gold(value, row.get("page"))
        break
    if not gold:
        for key in ANSWER_KEYS:
            if isinstance(row.get(key), str):
                gold += [(Path(m.group(1)).name, int(m.group(2)) if m.group(2) else None)
                         for m in CITATION.finditer(row[key])]
    return list(dict.fromkeys(gold))


def load_qa(path: str | Path) -> list[dict]:
    """Rows {"question", "gold": [(doc, page|None)]}; rows without a question or a gold source are skipped."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"No Q&A file at {path}.")
    raw: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            raw = [(n, r) for n, r in enumerate(csv.DictReader(f), start=2)]
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                raw.append((n, row))
    rows = []
    for n, row in raw:
        question = row.get("question") or row.get("query") or row.get("q")
        try:
            gold = gold_of(row)
        except ValueError as exc:
            raise BadInputError(f"{path.name} line {n}: {exc}.") from None
        if question and gold:
            rows.append({"question": str(question), "gold": gold})
    if not rows:
        raise BadInputError(f"{path.name} has no rows with a question and a gold source (a `doc`/`source` field "
                            "or a citation like [file.pdf#page=3] in the answer).")
    return rows


def _distinct(items):
    return list(dict.fromkeys(items))


def score_ranking(passages, gold: list[tuple[str, int | None]], ks=(1, 5), page_k: int = 5) -> dict:
    gold_docs = {d for d, _ in gold}
    gold_pages = {(d, p) for d, p in gold if p is not None}
    docs = [p.doc for p in passages]
    out: dict[str, float] = {}
    for k in ks:
        top = set(docs[:k])
        out[f"doc_hit@{k}"] = float(bool(top & gold_docs))
        out[f"doc_recall@{k}"] = len(top & gold_docs) / len(gold_docs)
    first = next((i for i, d in enumerate(docs, start=1) if d in gold_docs), None)
    out["mrr"] = 1.0 / first if first else 0.0
    if gold_pages:
        pages = _distinct((p.doc, p.page) for p in passages)
        top_pages = set(pages[:page_k])
        out[f"page_hit@{page_k}"] = float(bool(top_pages & gold_pages))
        out[f"page_recall@{page_k}"] = len(top_pages & gold_pages) / len(gold_pages)
        first_page = next((i for i, pg in enumerate(pages, start=1) if pg in gold_pages), None)
        out["page_mrr"] = 1.0 / first_page if first_page else 0.0
    return out


def evaluate_retriever(retriever, rows: list[dict], *, modes=MODES, ks=(1, 5), depth: int = 30,
                       progress=None) -> dict:
    """{"n": N, mode: {metric: mean}} over the rows; page metrics average over rows that name a page."""
    report: dict = {"n": len(rows)}
    for mode in modes:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        misses = []
        for i, row in enumerate(rows):
            if progress:
                progress(i, len(rows), mode)
            passages = retriever.retrieve(row["question"], k=max(depth, max(ks)), mode=mode)
            scores = score_ranking(passages, row["gold"], ks, page_k=5)
            for key, value in scores.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            if not scores.get("doc_hit@1"):
                misses.append({"question": row["question"], "gold": [f"{d}#page={p}" if p else d for d, p in row["gold"]],
                               "got": passages[0].citation if passages else None})
        report[mode] = {key: round(sums[key] / counts[key], 4) for key in sorted(sums)}
        report[mode]["misses@1"] = misses
    return report
