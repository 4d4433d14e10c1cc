"""Test sets: the questions every variant answers, with reference answers and gold sources.

Three origins: a file the user uploads (JSONL or CSV), the held-out split of a generated
training set, or questions typed in the UI. A row is ``{"question", "answer", "doc"?, "page"?}``,
the same format ``ragtune eval-retrieval`` reads: ``doc`` may be a list of files (or
"file.pdf#page=N" items) when several documents answer the question, and any of them counts.
``answer`` (or SQuAD's ``answers``) may be a list of acceptable answers: the row keeps the first as
``answer`` and all of them as ``answers``, and each answer metric takes the best of them, as SQuAD's
evaluation does.
Malformed rows are reported by line number and left out, never guessed at; a ``doc`` value that
cannot be read stops the load with the line named, since scoring against it would be silently wrong.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from ragtune.errors import BadInputError
from retrieval.evaluate import parse_gold
from training import synth

QUESTION_KEYS = ("question", "query", "prompt", "q")
ANSWER_KEYS = ("answer", "reference", "truth", "ground_truth", "reference_answer", "expected", "answers", "a")
DOC_KEYS = ("doc", "source", "document", "file", "source_document")
PAGE_KEYS = ("page", "page_number")
# "[Northwind_Standard_Benefits_Details.pdf#page=7]" or "[handbook.md]" at the end of a reference.
_CITED_SOURCE = re.compile(r"\[([^\[\]]+?\.[A-Za-z0-9]{1,5})(?:#page=(\d+))?\]")
MAX_ROWS = 100_000


def _first(row: dict, keys) -> object:
    lowered = {str(k).strip().lower(): v for k, v in row.items()}
    for key in keys:
        if key in lowered and lowered[key] not in (None, ""):
            return lowered[key]
    return None


def normalize_row(raw: dict) -> tuple[dict | None, str | None]:
    """One raw record -> (row, None) or (None, reason)."""
    if not isinstance(raw, dict):
        return None, f"expected an object with question and answer, got {type(raw).__name__}"
    question = _first(raw, QUESTION_KEYS)
    answer = _first(raw, ANSWER_KEYS)
    accepted = []
    if isinstance(answer, list):  # several acceptable answers (SQuAD style): any one of them is right
        texts = [a.get("text") if isinstance(a, dict) else a for a in answer]
        texts = [a for a in texts if isinstance(a, str) and a.strip()]
        answer = texts[0] if texts else None
        accepted = list(dict.fromkeys(_CITED_SOURCE.sub("", a).strip() for a in texts))
    if not isinstance(question, str) or not question.strip():
        return None, "missing 'question'"
    if not isinstance(answer, str) or not answer.strip():
        return None, "missing reference answer ('answer', 'reference' or 'truth')"
    row = {"question": question.strip(), "answer": answer.strip()}
    if len(accepted) > 1:
        row["answers"] = accepted
    doc, page = _first(raw, DOC_KEYS), _first(raw, PAGE_KEYS)
    cited = _CITED_SOURCE.findall(answer)
    if cited:
        row["answer"] = _CITED_SOURCE.sub("", answer).strip()
        if doc is None:
            doc, cited_page = cited[0]
            page = page if page is not None else (cited_page or None)
    if page is not None and not isinstance(page, list):
        try:
            page = int(page)
        except (TypeError, ValueError):
            return None, f"page '{page}' is not a number"
    if doc is not None:
        try:
            gold = parse_gold(doc, page)
        except ValueError as exc:
            raise UnreadableGold(str(exc)) from None
        row["doc"] = gold[0][0]
        if gold[0][1] is not None:
            row["page"] = gold[0][1]
        if len(gold) > 1:  # several documents answer it: any of them counts
            row["gold"] = [{"doc": d, "page": p} for d, p in gold]
    elif page is not None:
        row["page"] = page
    return row, None


class UnreadableGold(ValueError):
    """A row's gold source cannot be read; loading names the row and stops."""


def load_qa_file(path: str | Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """Read a JSONL/JSON/CSV test set. Returns (rows, errors); errors are (line number, reason).

    Raises BadInputError only when the file as a whole cannot be used (missing, wrong type,
    not UTF-8, no usable row).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Test set not found: {path}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{path.name} is not UTF-8 text; save it as UTF-8 JSONL or CSV.") from None
    suffix = path.suffix.lower()
    rows, errors = [], []
    if suffix == ".csv":
        records = _csv_records(text, path.name)
    elif suffix == ".json" and _is_single_json(text):
        records = _json_records(text, path.name)
    elif suffix in (".jsonl", ".json", ".ndjson", ""):
        records = _jsonl_records(text)
    else:
        raise BadInputError(f"{path.name}: unsupported test set format '{suffix}'; use .jsonl or .csv "
                            "with question and answer columns.")
    seen = set()
    for line_no, raw, problem in records:
        if problem:
            errors.append((line_no, problem))
            continue
        try:
            row, reason = normalize_row(raw)
        except UnreadableGold as exc:
            raise BadInputError(f"{path.name} line {line_no}: {exc}.") from None
        if reason:
            errors.append((line_no, reason))
            continue
        key = (row["question"].lower(), json.dumps(row.get("gold") or row.get("doc")), row["answer"].lower())
        if key in seen:
            errors.append((line_no, "duplicate row (kept the first)"))
            continue
        seen.add(key)
        rows.append(row)
        if len(rows) >= MAX_ROWS:
            errors.append((line_no, f"stopped after {MAX_ROWS} rows"))
            break
    if not rows:
        detail = f" First problem: line {errors[0][0]}: {errors[0][1]}." if errors else ""
        raise BadInputError(f"{path.name} has no usable question/answer row.{detail}")
    return rows, errors


def _jsonl_records(text: str):
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield line_no, None, f"not valid JSON ({exc.msg})"


def _is_single_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False  # read as JSONL, which reports the bad lines one by one


def _json_records(text: str, name: str):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{name} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if isinstance(data, dict):
        data = data.get("data") or data.get("rows") or data.get("questions") or [data]
    if not isinstance(data, list):
        raise BadInputError(f"{name}: expected a list of question/answer objects.")
    for i, item in enumerate(data, start=1):
        yield i, item, None


def _csv_records(text: str, name: str):
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise BadInputError(f"{name} is empty.")
    fields = {f.strip().lower() for f in reader.fieldnames if f}
    if not fields & set(QUESTION_KEYS) or not fields & set(ANSWER_KEYS):
        raise BadInputError(f"{name}: the header needs a 'question' and an 'answer' column "
                            f"(found: {', '.join(reader.fieldnames)}).")
    for record in reader:
        if None in record:  # more cells than header columns
            yield reader.line_num, None, "more cells than header columns"
            continue
        yield reader.line_num, {k: v for k, v in record.items() if k is not None}, None


def rows_from_text(text: str) -> tuple[list[dict], list[tuple[int, str]]]:
    """Questions typed in the UI: one per line as ``question | reference answer [| doc [| page]]``."""
    rows, errors = [], []
    for line_no, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        raw = dict(zip(("question", "answer", "doc", "page"), parts))
        try:
            row, reason = normalize_row(raw)
        except UnreadableGold as exc:
            row, reason = None, str(exc)
        if reason:
            errors.append((line_no, reason + " (write: question | reference answer)"))
        else:
            rows.append(row)
    return rows, errors


def held_out_rows(ws, dataset: str | None = None) -> tuple[list[dict], str]:
    """The test split of a generated training set (the newest one unless named): (rows, label)."""
    version = None
    if dataset:
        for candidate in synth.list_datasets(ws):
            if dataset in (getattr(candidate, "name", None), getattr(candidate, "version", None), str(candidate)):
                version = candidate
    else:
        version = synth.latest_dataset(ws)
    if version is None:
        raise BadInputError("This workspace has no generated Q&A set yet: generate one first or pass --qa FILE.")
    folder = Path(getattr(version, "path", None) or getattr(version, "dir", None) or version)
    rows, errors = load_qa_file(folder / "test.jsonl")
    return rows, f"held-out split of {folder.name}"


def rows_fingerprint(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
