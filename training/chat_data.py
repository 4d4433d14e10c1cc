"""Training rows in chat format, read from files people bring.

Every training row is ``{"messages": [{"role": ..., "content": ...}, ...]}`` ending with an
assistant turn. Files may be chat JSONL, question/answer JSONL or CSV with question and answer
columns. A bad row is reported by line number and skipped, never silently used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Iterable, Iterator

from ragtune.errors import BadInputError

ROLES = ("system", "user", "assistant")
QUESTION_KEYS = ("question", "prompt", "instruction", "query")
ANSWER_KEYS = ("answer", "response", "completion", "output")
MAX_FILE_MB = 512
MAX_CONTENT_CHARS = 20_000


def qa_to_messages(question: str, answer: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def check_messages(messages) -> str | None:
    """The reason a message list cannot be trained on, or None when it is fine."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            return f"message {i} is not an object"
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return f"message {i} has role {role!r}; use one of {', '.join(ROLES)}"
        if not isinstance(content, str) or not content.strip():
            return f"message {i} ({role}) has no text content"
        if len(content) > MAX_CONTENT_CHARS:
            return f"message {i} ({role}) is {len(content)} characters long (limit {MAX_CONTENT_CHARS})"
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        return "a system message may only come first"
    if "user" not in roles:
        return "there is no user message"
    if roles[-1] != "assistant":
        return "the last message must be the assistant's answer"
    return None


def _row_from_object(obj) -> tuple[dict | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if "messages" in obj:
        reason = check_messages(obj["messages"])
        if reason:
            return None, reason
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]}, None
    lowered = {str(k).lower(): v for k, v in obj.items()}
    question = next((lowered[k] for k in QUESTION_KEYS if k in lowered), None)
    answer = next((lowered[k] for k in ANSWER_KEYS if k in lowered), None)
    if question is None and answer is None:
        return None, "no 'messages', and no 'question'/'answer' fields"
    if not isinstance(question, str) or not question.strip():
        return None, "missing or empty 'question'"
    if not isinstance(answer, str) or not answer.strip():
        return None, "missing or empty 'answer'"
    messages = qa_to_messages(question.strip(), answer.strip(), lowered.get("system"))
    reason = check_messages(messages)
    return (None, reason) if reason else ({"messages": messages}, None)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadInputError(f"Training file {path} does not exist.")
    if not path.is_file():
        raise BadInputError(f"{path} is a folder, not a training file (.jsonl or .csv).")
    size_mb = path.stat().st_size / 2**20
    if size_mb > MAX_FILE_MB:
        raise BadInputError(f"Training file {path.name} is {size_mb:.0f} MB; the limit is {MAX_FILE_MB} MB.")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path.name} is not UTF-8 text (byte {exc.start}): save it as UTF-8 JSONL or CSV."
        ) from None


def load_chat_file(path: str | Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """Read chat JSONL, question/answer JSONL or CSV: (rows, [(line_no, reason), ...]).

    Raises BadInputError only when the file as a whole cannot be read (missing, not text,
    unknown format, CSV without question/answer columns).
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _load_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _load_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    raise BadInputError(f"{path.name}: unsupported training file type '{suffix}'; use .jsonl (chat or question/answer) or .csv.")


def _load_jsonl(path: Path) -> tuple[list[dict], list[tuple[int, str]]]:
    return _rows_and_errors(_jsonl_records(path))


def _load_csv(path: Path, delimiter: str = ",") -> tuple[list[dict], list[tuple[int, str]]]:
    return _rows_and_errors(_csv_records(path, delimiter))


def _jsonl_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """(line number, object, why the line is not one) for each non-empty line."""
    for line_no, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
            continue
        yield line_no, obj, None


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, object, str | None]]:
    """(line number, the row as an object keyed by lower-case column, why the row is not one) for each
    non-empty row; a file without question and answer columns is refused whole."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if not any(k in fields for k in QUESTION_KEYS) or not any(k in fields for k in ANSWER_KEYS):
        raise BadInputError(
            f"{path.name}: a CSV training file needs 'question' and 'answer' columns; found {fields or 'no header'}."
        )
    for record in reader:
        if None in record:
            yield reader.line_num, None, f"{len(record[None])} more cells than header columns"
            continue
        obj = {(k or "").strip().lower(): v for k, v in record.items()}
        if any((v or "").strip() for v in obj.values()):
            yield reader.line_num, obj, None


def _rows_and_errors(records: Iterable[tuple[int, object, str | None]]) -> tuple[list[dict], list[tuple[int, str]]]:
    """The training rows of a file's records, and (line number, reason) for each record that makes none."""
    rows, errors = [], []
    for line_no, obj, reason in records:
        row, reason = (None, reason) if reason else _row_from_object(obj)
        if reason:
            errors.append((line_no, reason))
        else:
            rows.append(row)
    return rows, errors


def describe_errors(errors: list[tuple[int, str]], limit: int = 5) -> str:
    shown = "; ".join(f"line {n}: {r}" for n, r in errors[:limit])
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return shown + more


def load_chat_file_strict(path: str | Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """Like load_chat_file, but a file with no usable row is an error that names the bad lines."""
    rows, errors = load_chat_file(path)
    if not rows:
        detail = f": {describe_errors(errors)}" if errors else ": the file is empty"
        raise BadInputError(f"{Path(path).name} has no usable training rows{detail}.")
    return rows, errors


def rows_hash(*row_lists: list[dict]) -> str:
    """A stable fingerprint of training data (order-sensitive, key-order-insensitive)."""
    digest = hashlib.sha256()
    for rows in row_lists:
        for row in rows:
            digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
            digest.update(b"\n")
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def first_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")


def last_assistant_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
