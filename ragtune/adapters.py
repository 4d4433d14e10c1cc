"""The registry of trained adapters of a workspace.

Training writes it, serving reads it. Each adapter lives in ``<workspace>/adapters/<name>/``:
for LoRA/QLoRA a standard PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``,
what vLLM's LoRA loader and ``PeftModel.from_pretrained`` expect), for full fine-tuning a complete
model folder. Beside the weights, ``ragtune.json`` holds the same record as the database row, so
an adapter folder copied to another machine still says what it is.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import atomic_write_json, read_json
from .errors import BadInputError

METHODS = ("lora", "qlora", "full")
INFO_FILE = "ragtune.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

MIGRATIONS = [
    """CREATE TABLE adapters (
        name TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        base_model TEXT NOT NULL,
        method TEXT NOT NULL,
        dataset TEXT,
        data_hash TEXT,
        metrics TEXT NOT NULL DEFAULT '{}',
        config TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    )""",
]


@dataclass
class AdapterInfo:
    name: str
    path: str
    base_model: str
    method: str = "lora"  # "lora" | "qlora" | "full"
    dataset: str | None = None
    data_hash: str | None = None
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def is_full_model(self) -> bool:
        """A full fine-tune is a whole model folder, not a LoRA adapter to hot-load."""
        return self.method == "full"

    def to_dict(self) -> dict:
        return asdict(self)


def validate_adapter_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInputError(
            f"'{name}' is not a valid adapter name: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    return name


def adapters_dir(ws) -> Path:
    return ws.path("adapters")


def adapter_path(ws, name: str) -> Path:
    return ws.path("adapters", validate_adapter_name(name))


def _open(ws) -> None:
    ws.migrate("adapters", MIGRATIONS)


def _from_row(row) -> AdapterInfo:
    d = dict(row)
    d["metrics"] = json.loads(d["metrics"] or "{}")
    d["config"] = json.loads(d["config"] or "{}")
    return AdapterInfo(**d)


def register_adapter(ws, info: AdapterInfo) -> AdapterInfo:
    """Record (or replace) an adapter; also writes its ``ragtune.json`` beside the weights."""
    validate_adapter_name(info.name)
    if info.method not in METHODS:
        raise BadInputError(f"Unknown training method '{info.method}': use one of {', '.join(METHODS)}.")
    folder = Path(info.path)
    if not folder.is_dir():
        raise BadInputError(f"Adapter folder {folder} does not exist; train or copy the adapter first.")
    info.created_at = info.created_at or time.time()
    atomic_write_json(folder / INFO_FILE, info.to_dict())
    _open(ws)
    with ws.db() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO adapters (name, path, base_model, method, dataset, data_hash, metrics, config,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.name, str(folder), info.base_model, info.method, info.dataset, info.data_hash,
             json.dumps(info.metrics, default=str), json.dumps(info.config, default=str), info.created_at),
        )
    return info


def list_adapters(ws) -> list[AdapterInfo]:
    """Adapters of the workspace, newest first."""
    _open(ws)
    with ws.db() as conn:
        rows = conn.execute("SELECT * FROM adapters ORDER BY created_at DESC").fetchall()
    return [_from_row(r) for r in rows]


def get_adapter(ws, name: str) -> AdapterInfo:
    _open(ws)
    with ws.db() as conn:
        row = conn.execute("SELECT * FROM adapters WHERE name=?", (name,)).fetchone()
    if row is None:
        known = [a.name for a in list_adapters(ws)]
        hint = f"Known adapters: {', '.join(known)}." if known else "This workspace has no adapters yet: train one first."
        raise BadInputError(f"unknown adapter '{name}' in workspace '{ws.name}'. {hint}")
    return _from_row(row)


def delete_adapter(ws, name: str) -> None:
    info = get_adapter(ws, name)
    with ws.db() as conn:
        conn.execute("DELETE FROM adapters WHERE name=?", (name,))
    folder = Path(info.path)
    # Only remove folders inside this workspace: a registered external path stays on disk.
    if folder.exists() and adapters_dir(ws).resolve() in folder.resolve().parents:
        trash = folder.parent / f".deleted-{folder.name}-{time.time_ns()}"
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def read_adapter_info(folder: str | Path) -> AdapterInfo | None:
    """The record stored beside an adapter's weights, or None if the folder has none."""
    d = read_json(Path(folder) / INFO_FILE)
    if not d:
        return None
    return AdapterInfo(**{k: v for k, v in d.items() if k in AdapterInfo.__dataclass_fields__})
