"""Versioned training sets of a workspace: ``<workspace>/datasets/<version>/``.

A version folder holds ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` and
``manifest.json`` (hash, counts, teacher, split seed...). Versions are written whole with one
rename, so a reader never sees half a dataset, and never change once written.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from ragtune.atomic import atomic_directory, atomic_write_json, atomic_write_jsonl, read_json
from ragtune.errors import BadInputError

from .chat_data import check_messages, first_user_text, last_assistant_text, load_chat_file_strict, rows_hash

SPLITS = ("train", "validation", "test")
VERSION_RE = re.compile(r"^v(\d+)$")


@dataclass
class DatasetVersion:
    name: str
    path: Path
    manifest: dict

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.jsonl"

    @property
    def train_path(self) -> Path:
        return self.split_path("train")

    @property
    def validation_path(self) -> Path:
        return self.split_path("validation")

    @property
    def test_path(self) -> Path:
        return self.split_path("test")

    @property
    def counts(self) -> dict:
        return self.manifest.get("counts", {})

    @property
    def teacher(self) -> str | None:
        return self.manifest.get("teacher")

    @property
    def data_hash(self) -> str | None:
        return self.manifest.get("hash")

    def rows(self, split: str) -> list[dict]:
        return read_jsonl(self.split_path(split))

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), **self.manifest}


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def datasets_root(ws) -> Path:
    return ws.path("datasets")


def list_datasets(ws) -> list[DatasetVersion]:
    """Dataset versions of the workspace, newest first."""
    root = datasets_root(ws)
    found = []
    if root.exists():
        for d in root.iterdir():
            m = VERSION_RE.match(d.name)
            manifest = read_json(d / "manifest.json") if m and d.is_dir() else None
            if manifest:
                found.append((int(m.group(1)), DatasetVersion(d.name, d, manifest)))
    return [dv for _, dv in sorted(found, key=lambda t: t[0], reverse=True)]


def latest_dataset(ws) -> DatasetVersion | None:
    versions = list_datasets(ws)
    return versions[0] if versions else None


def get_dataset(ws, name: str) -> DatasetVersion:
    if not VERSION_RE.match(name or ""):
        raise BadInputError(f"'{name}' is not a dataset version name (like 'v3').")
    folder = datasets_root(ws) / name
    manifest = read_json(folder / "manifest.json")
    if not manifest:
        known = [d.name for d in list_datasets(ws)]
        hint = f"Known versions: {', '.join(known)}." if known else "Run `ragtune synth` or upload a training file first."
        raise BadInputError(f"No dataset version '{name}' in workspace '{ws.name}'. {hint}")
    return DatasetVersion(name, folder, manifest)


def save_dataset_version(ws, splits: dict[str, list[dict]], manifest: dict) -> DatasetVersion:
    """Write a new version atomically; returns it. `manifest` gets counts, hash, name and time added."""
    root = datasets_root(ws)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".version.lock")):
        numbers = [int(m.group(1)) for d in root.iterdir() if (m := VERSION_RE.match(d.name))]
        name = f"v{max(numbers, default=0) + 1}"
        full = {
            "name": name,
            "created_at": time.time(),
            **manifest,
            "counts": {s: len(splits.get(s, [])) for s in SPLITS},
            "hash": rows_hash(*(splits.get(s, []) for s in SPLITS)),
        }
        with atomic_directory(root / name) as tmp:
            for split in SPLITS:
                atomic_write_jsonl(tmp / f"{split}.jsonl", splits.get(split, []))
            atomic_write_json(tmp / "manifest.json", full)
    return DatasetVersion(name, root / name, full)


def import_chat_file(ws, path: str | Path, *, validation_fraction: float = 0.1, test_fraction: float = 0.0,
                     seed: int = 0, note: str = "") -> tuple[DatasetVersion, list[tuple[int, str]]]:
    """Make a dataset version from an uploaded chat JSONL / Q&A JSONL / CSV file.

    Returns the version and the skipped lines [(line_no, reason)] so the caller can show them.
    Rows with the same question go to the same split, so a test question is never trained on.
    """
    rows, errors = load_chat_file_strict(path)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_norm(first_user_text(row["messages"])), []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(keys)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * validation_fraction)) if n >= 10 else 0
    split_keys = {"test": keys[:n_test], "validation": keys[n_test:n_test + n_val], "train": keys[n_test + n_val:]}
    splits: dict[str, list[dict]] = {}
    for split, ks in split_keys.items():
        out = []
        for k in ks:
            for row in groups[k]:
                if split == "test":
                    msgs = row["messages"]
                    out.append({"question": first_user_text(msgs), "answer": last_assistant_text(msgs),
                                "doc": None, "page": None, "messages": msgs})
                else:
                    out.append(row)
        splits[split] = out
    manifest = {"source": "upload", "file": Path(path).name, "teacher": None, "split_seed": seed,
                "split_by": "question", "skipped_lines": [list(e) for e in errors[:200]], "note": note}
    return save_dataset_version(ws, splits, manifest), errors


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


@dataclass
class TrainingData:
    """The rows one run trains on, with where they came from."""
    name: str
    train: list[dict]
    validation: list[dict]
    data_hash: str
    skipped: list[tuple[int, str]]
    train_meta: list[dict] = field(default_factory=list)  # question, answer, fact, doc per training row


def resolve_training_data(ws, dataset: str | None, *, seed: int = 0) -> TrainingData:
    """A dataset version name, a .jsonl/.csv file, or None for the newest version."""
    if dataset and (Path(dataset).suffix.lower() in (".jsonl", ".json", ".csv", ".tsv", ".ndjson")
                    or Path(dataset).expanduser().is_file()):
        path = Path(dataset).expanduser()
        rows, errors = load_chat_file_strict(path)
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        n_val = len(rows) // 10 if len(rows) >= 20 else 0
        val = [rows[i] for i in order[:n_val]]
        train = [rows[i] for i in order[n_val:]]
        return TrainingData(path.name, train, val, rows_hash(train, val), errors, [_meta(r) for r in train])
    version = get_dataset(ws, dataset) if dataset else latest_dataset(ws)
    if version is None:
        raise BadInputError(
            f"Workspace '{ws.name}' has no training data yet: run `ragtune synth` (after ingesting documents) "
            "or pass a chat JSONL / CSV file as the dataset."
        )
    train_rows = version.rows("train")
    train = [_messages_only(r) for r in train_rows]
    val = [_messages_only(r) for r in version.rows("validation")]
    bad = [i for i, r in enumerate(train, 1) if check_messages(r["messages"])]
    if bad:
        raise BadInputError(f"Dataset {version.name} has malformed training rows (lines {bad[:5]}); make a new version.")
    if not train:
        raise BadInputError(f"Dataset {version.name} has an empty training split.")
    return TrainingData(version.name, train, val, rows_hash(train, val), [], [_meta(r) for r in train_rows])


def _meta(row: dict) -> dict:
    """What choosing rows needs: the question, the answer, and the fact and document they come from."""
    messages = row.get("messages") or []
    return {"question": row.get("question") or first_user_text(messages),
            "answer": row.get("answer") or last_assistant_text(messages),
            "fact": row.get("fact"), "doc": row.get("doc")}


def _messages_only(row: dict) -> dict:
    return {"messages": row.get("messages") or []}
