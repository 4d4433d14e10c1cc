"""Evaluation tables in the workspace database: runs, their questions, cached answers, arena battles.

Answers are stored once per cache key (question + variant + engine kind and model + adapter + index version +
generation settings), so a rerun or another run over the same questions reuses them; a run
only points at them. Every answer is committed as soon as it exists, so an interrupted run
loses at most the answer being generated.
"""

from __future__ import annotations

import json
import time

from serving.engine import decode_tokens_per_s

from .metrics import METRIC_DOCS

MIGRATIONS = [
    [
        """CREATE TABLE eval_runs (
            run_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            config TEXT NOT NULL,
            summary TEXT
        )""",
        """CREATE TABLE eval_items (
            run_id TEXT NOT NULL REFERENCES eval_runs(run_id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            row TEXT NOT NULL,
            PRIMARY KEY (run_id, idx)
        )""",
        """CREATE TABLE eval_answers (
            cache_key TEXT PRIMARY KEY,
            question TEXT NOT NULL,
            variant TEXT NOT NULL,
            model TEXT NOT NULL,
            adapter TEXT,
            index_version TEXT,
            answer TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE eval_results (
            run_id TEXT NOT NULL REFERENCES eval_runs(run_id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            variant TEXT NOT NULL,
            cache_key TEXT NOT NULL,
            metrics TEXT NOT NULL,
            PRIMARY KEY (run_id, idx, variant)
        )""",
        """CREATE TABLE arena_battles (
            battle_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            question TEXT NOT NULL,
            left_variant TEXT NOT NULL,
            right_variant TEXT NOT NULL,
            left_answer TEXT NOT NULL,
            right_answer TEXT NOT NULL,
            vote TEXT,
            voted_at REAL
        )""",
    ],
]


# Metrics stored under a name since changed: an answer's "tokens_per_s" was its end-to-end rate (output tokens
# over the whole answer's time) until the decode rate got a name of its own.
RENAMED_METRICS = {"tokens_per_s": "e2e_tokens_per_s"}


def open_store(ws) -> None:
    ws.migrate("evaluation", MIGRATIONS)


def create_run(ws, run_id: str, config: dict, rows: list[dict]) -> None:
    open_store(ws)
    with ws.db() as conn:
        conn.execute("INSERT INTO eval_runs (run_id, created_at, status, config) VALUES (?, ?, ?, ?)",
                     (run_id, time.time(), "running", json.dumps(config, default=str)))
        conn.executemany("INSERT INTO eval_items (run_id, idx, row) VALUES (?, ?, ?)",
                         [(run_id, i, json.dumps(r, ensure_ascii=False)) for i, r in enumerate(rows)])


def get_run_record(ws, run_id: str) -> dict | None:
    open_store(ws)
    with ws.db() as conn:
        run = conn.execute("SELECT * FROM eval_runs WHERE run_id=?", (run_id,)).fetchone()
        if run is None:
            return None
        items = conn.execute("SELECT row FROM eval_items WHERE run_id=? ORDER BY idx", (run_id,)).fetchall()
    return {**_run_record(run), "rows": [json.loads(r["row"]) for r in items]}


def _run_record(row) -> dict:
    """An eval_runs row with its JSON columns read (the summary only where the query selected it)."""
    record = {**dict(row), "config": json.loads(row["config"])}
    if "summary" in row.keys():
        record["summary"] = _current_summary(json.loads(row["summary"])) if row["summary"] else None
    return record


def set_run_status(ws, run_id: str, status: str, summary: dict | None = None) -> None:
    with ws.db() as conn:
        conn.execute("UPDATE eval_runs SET status=?, finished_at=?, summary=COALESCE(?, summary) WHERE run_id=?",
                     (status, time.time() if status != "running" else None,
                      json.dumps(summary, default=str) if summary is not None else None, run_id))


# Every run, newest first, with its question count (n) and how many (question, variant) answers it has stored.
_RUNS_WITH_COUNTS = ("SELECT r.run_id, r.created_at, r.finished_at, r.status, r.config,"
                     " (SELECT COUNT(*) FROM eval_items i WHERE i.run_id=r.run_id) AS n,"
                     " (SELECT COUNT(*) FROM eval_results x WHERE x.run_id=r.run_id) AS answered"
                     " FROM eval_runs r ORDER BY r.created_at DESC")


def list_run_records(ws) -> list[dict]:
    """Every run of the workspace, newest first, with its config read and its counts (n, answered)."""
    open_store(ws)
    with ws.db() as conn:
        return [_run_record(r) for r in conn.execute(_RUNS_WITH_COUNTS).fetchall()]


def delete_run(ws, run_id: str) -> None:
    open_store(ws)
    with ws.db() as conn:
        conn.execute("DELETE FROM eval_results WHERE run_id=?", (run_id,))
        conn.execute("DELETE FROM eval_items WHERE run_id=?", (run_id,))
        conn.execute("DELETE FROM eval_runs WHERE run_id=?", (run_id,))


def cached_answer(ws, cache_key: str) -> dict | None:
    with ws.db() as conn:
        row = conn.execute("SELECT answer FROM eval_answers WHERE cache_key=?", (cache_key,)).fetchone()
    return json.loads(row["answer"]) if row else None


def save_result(ws, run_id: str, idx: int, variant: str, cache_key: str, answer: dict, metrics: dict,
                *, key_parts: dict, new_answer: bool) -> None:
    """Store the answer (when new) and its per-run metrics in one transaction."""
    with ws.db() as conn:
        if new_answer:
            conn.execute(
                "INSERT OR REPLACE INTO eval_answers (cache_key, question, variant, model, adapter, index_version,"
                " answer, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cache_key, key_parts["question"], key_parts["variant"], key_parts["model"], key_parts.get("adapter"),
                 key_parts.get("index_version"), json.dumps(answer, ensure_ascii=False, default=str), time.time()))
        conn.execute("INSERT OR REPLACE INTO eval_results (run_id, idx, variant, cache_key, metrics) VALUES (?, ?, ?, ?, ?)",
                     (run_id, idx, variant, cache_key, json.dumps(metrics, default=str)))


def update_metrics(ws, run_id: str, updates: list[tuple[int, str, dict]]) -> None:
    with ws.db() as conn:
        conn.executemany("UPDATE eval_results SET metrics=? WHERE run_id=? AND idx=? AND variant=?",
                         [(json.dumps(m, default=str), run_id, idx, v) for idx, v, m in updates])


def run_results(ws, run_id: str) -> list[dict]:
    """Every (question, variant) result of a run with its answer: idx, variant, cache_key, metrics, answer."""
    with ws.db() as conn:
        rows = conn.execute(
            "SELECT x.idx, x.variant, x.cache_key, x.metrics, a.answer FROM eval_results x"
            " LEFT JOIN eval_answers a ON a.cache_key = x.cache_key WHERE x.run_id=? ORDER BY x.idx, x.variant",
            (run_id,)).fetchall()
    return [{"idx": r["idx"], "variant": r["variant"], "cache_key": r["cache_key"],
             "metrics": _current_metrics(json.loads(r["metrics"])),
             "answer": json.loads(r["answer"]) if r["answer"] else {}}
            for r in rows]


def done_keys(ws, run_id: str) -> set[tuple[int, str]]:
    with ws.db() as conn:
        rows = conn.execute("SELECT idx, variant FROM eval_results WHERE run_id=?", (run_id,)).fetchall()
    return {(r["idx"], r["variant"]) for r in rows}


def run_index_versions(ws, run_id: str) -> set[str]:
    """Index versions the run's answers were retrieved from (empty when no variant retrieves)."""
    with ws.db() as conn:
        rows = conn.execute("SELECT DISTINCT a.index_version FROM eval_results x JOIN eval_answers a"
                            " ON a.cache_key = x.cache_key WHERE x.run_id=? AND a.index_version IS NOT NULL",
                            (run_id,)).fetchall()
    return {r["index_version"] for r in rows}


def _current_metrics(metrics: dict) -> dict:
    """One answer's metrics under today's names, however old the run; the decode rate of an answer scored
    before it existed comes from its stored times."""
    _renamed(metrics)
    if "decode_tokens_per_s" not in metrics and "latency_s" in metrics:
        metrics["decode_tokens_per_s"] = decode_tokens_per_s(metrics.get("completion_tokens"), metrics.get("ttft_s"),
                                                             metrics["latency_s"])
    return metrics


def _current_summary(summary: dict) -> dict:
    """A stored summary under today's metric names: its per-variant means and the docs shown beside them."""
    for variant in summary.get("variants", {}).values():
        _renamed(variant.get("metrics", {}))
    docs = _renamed(summary.get("metric_docs") or {})
    docs.update({new: METRIC_DOCS[new] for new in RENAMED_METRICS.values() if new in docs})
    return summary


def _renamed(by_metric: dict) -> dict:
    """`by_metric` (a dict keyed by metric name) with each renamed metric moved to its new name, in place."""
    for old, new in RENAMED_METRICS.items():
        if old in by_metric and new not in by_metric:
            by_metric[new] = by_metric.pop(old)
    return by_metric
