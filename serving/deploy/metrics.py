"""Monitoring of deployed variants: Prometheus metrics for the running server, and a
persistent request log in the workspace that ``summary(ws)`` turns into numbers and plots for
the builder UI (which runs in another process than the deploy server).

Labels are the workspace and the served model string (``rag``, ``ft:adapter``...), never a key,
a question or an answer.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the server)

from ragtune import feedback as feedback_store

from ._schema import ensure_schema

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

MIGRATIONS = [
    [
        "CREATE TABLE deploy_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
        "deployment_version INTEGER, model TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL, "
        "latency_s REAL, ttft_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER, error TEXT)",
        "CREATE INDEX deploy_requests_at ON deploy_requests (at)",
    ],
]


class DeployMetrics:
    """Prometheus metrics of one deploy app (own registry, so several apps can live in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ["workspace", "model"]
        self.requests = Counter("ragtune_deploy_requests", "Chat requests answered or failed",
                                labels + ["status"], registry=self.registry)
        self.latency = Histogram("ragtune_deploy_latency_seconds", "Time to the full answer",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("ragtune_deploy_ttft_seconds", "Time to the first token",
                              labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("ragtune_deploy_tokens", "Tokens processed", labels + ["kind"], registry=self.registry)
        self.errors = Counter("ragtune_deploy_errors", "Failed requests by reason", labels + ["reason"],
                              registry=self.registry)
        self.refused = Counter("ragtune_deploy_refused", "Requests refused before reaching the model",
                               ["workspace", "reason"], registry=self.registry)
        self.feedback = Counter("ragtune_deploy_feedback", "Feedback received", labels + ["rating"],
                                registry=self.registry)
        self.feedback_rate = Gauge("ragtune_deploy_feedback_rate", "Share of answers that received feedback",
                                   labels, registry=self.registry)
        self.in_flight = Gauge("ragtune_deploy_in_flight", "Requests being answered now", ["workspace"],
                               registry=self.registry)
        self._lock = threading.Lock()
        self._answers: dict[tuple, int] = {}
        self._rated: dict[tuple, int] = {}

    def observe_answer(self, workspace: str, model: str, latency_s: float, ttft_s: float | None,
                       prompt_tokens: int, completion_tokens: int) -> None:
        self.requests.labels(workspace, model, "ok").inc()
        self.latency.labels(workspace, model).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(workspace, model).observe(ttft_s)
        self.tokens.labels(workspace, model, "prompt").inc(prompt_tokens or 0)
        self.tokens.labels(workspace, model, "completion").inc(completion_tokens or 0)
        with self._lock:
            key = (workspace, model)
            self._answers[key] = self._answers.get(key, 0) + 1
            self.feedback_rate.labels(*key).set(self._rated.get(key, 0) / self._answers[key])

    def observe_error(self, workspace: str, model: str, reason: str) -> None:
        self.requests.labels(workspace, model, "error").inc()
        self.errors.labels(workspace, model, reason).inc()

    def observe_refused(self, workspace: str, reason: str) -> None:
        self.refused.labels(workspace or "-", reason).inc()

    def observe_feedback(self, workspace: str, model: str, rating: str | None) -> None:
        self.feedback.labels(workspace, model, rating or "none").inc()
        with self._lock:
            key = (workspace, model)
            self._rated[key] = self._rated.get(key, 0) + 1
            answers = self._answers.get(key, 0)
            if answers:
                self.feedback_rate.labels(*key).set(min(1.0, self._rated[key] / answers))

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ------------------------------------------------------------------ persistent log + summary

def _open(ws) -> None:
    ensure_schema(ws, "deploy_metrics", MIGRATIONS)


def record_request(ws, *, model: str, channel: str, status: str, deployment_version: int | None,
                   latency_s: float | None = None, ttft_s: float | None = None, prompt_tokens: int | None = None,
                   completion_tokens: int | None = None, error: str | None = None, at: float | None = None) -> None:
    """Append one request to the workspace's log (no question or answer text, no key)."""
    _open(ws)
    with ws.db() as conn:
        conn.execute("INSERT INTO deploy_requests (at, deployment_version, model, channel, status, latency_s, ttft_s, "
                     "prompt_tokens, completion_tokens, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (at or time.time(), deployment_version, model, channel, status, latency_s, ttft_s,
                      prompt_tokens, completion_tokens, (error or "")[:200] or None))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(ws, since: float | None = None, bucket_s: int = 60) -> dict:
    """Per deployed model: requests, errors, latency percentiles, tokens, feedback; plus a time series.

    Returns {"variants": [ {model, deployment_versions, requests, errors, cancelled (client went away), error_rate, latency_p50_s,
    latency_p95_s, ttft_p50_s, ttft_p95_s, prompt_tokens, completion_tokens, answers, rated, up, down,
    corrections, feedback_rate, up_rate} ], "series": [ {t, model, requests, errors, latency_p50_s,
    latency_p95_s, completion_tokens} ], "since": float|None, "bucket_s": int}.
    """
    _open(ws)
    sql = "SELECT * FROM deploy_requests" + (" WHERE at >= ?" if since else "") + " ORDER BY at"
    with ws.db() as conn:
        rows = [dict(r) for r in conn.execute(sql, (since,) if since else ())]
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    counts = {}
    for (variant, adapter), c in feedback_store.feedback_counts(ws).items():
        counts[f"{variant}:{adapter}" if adapter else variant] = c
    variants = []
    for model in sorted(set(by_model) | set(counts)):
        rs = by_model.get(model, [])
        ok = [r for r in rs if r["status"] == "ok"]
        lat = [r["latency_s"] for r in ok if r["latency_s"] is not None]
        ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
        fb = counts.get(model, {"answers": 0, "rated": 0, "up": 0, "down": 0, "corrections": 0})
        errors = sum(r["status"] == "error" for r in rs)
        cancelled = sum(r["status"] == "cancelled" for r in rs)
        variants.append({
            "model": model,
            "deployment_versions": sorted({r["deployment_version"] for r in rs if r["deployment_version"] is not None}),
            "requests": len(rs), "errors": errors, "cancelled": cancelled,
            "error_rate": errors / len(rs) if rs else 0.0,
            "latency_p50_s": _percentile(lat, 50), "latency_p95_s": _percentile(lat, 95),
            "ttft_p50_s": _percentile(ttft, 50), "ttft_p95_s": _percentile(ttft, 95),
            "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in ok),
            "completion_tokens": sum(r["completion_tokens"] or 0 for r in ok),
            **fb,
            "feedback_rate": fb["rated"] / fb["answers"] if fb["answers"] else 0.0,
            "up_rate": fb["up"] / (fb["up"] + fb["down"]) if fb["up"] + fb["down"] else None,
        })
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        series.setdefault((int(r["at"] // bucket_s * bucket_s), r["model"]), []).append(r)
    points = []
    for (t, model), rs in sorted(series.items()):
        lat = [r["latency_s"] for r in rs if r["status"] == "ok" and r["latency_s"] is not None]
        points.append({"t": t, "model": model, "requests": len(rs), "errors": sum(r["status"] == "error" for r in rs),
                       "latency_p50_s": _percentile(lat, 50), "latency_p95_s": _percentile(lat, 95),
                       "completion_tokens": sum(r["completion_tokens"] or 0 for r in rs)})
    return {"variants": variants, "series": points, "since": since, "bucket_s": bucket_s}


def plot_summary(data: dict):
    """A matplotlib Figure of a summary(): requests, latency p50/p95 and errors over time, feedback per model."""
    import matplotlib  # heavy, and only the builder UI plots

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    (ax_req, ax_lat), (ax_err, ax_fb) = axes
    models = sorted({p["model"] for p in data["series"]})
    for model in models:
        pts = [p for p in data["series"] if p["model"] == model]
        times = [datetime.fromtimestamp(p["t"]) for p in pts]
        ax_req.plot(times, [p["requests"] for p in pts], marker="o", label=model)
        ax_lat.plot(times, [p["latency_p50_s"] for p in pts], marker="o", label=f"{model} p50")
        ax_lat.plot(times, [p["latency_p95_s"] for p in pts], linestyle="--", label=f"{model} p95")
        ax_err.plot(times, [p["errors"] for p in pts], marker="x", label=model)
    ax_req.set_title(f"Requests per {data['bucket_s']} s")
    ax_lat.set_title("Latency (s)")
    ax_err.set_title("Errors")
    names = [v["model"] for v in data["variants"]]
    ax_fb.bar(names, [v["up"] for v in data["variants"]], label="thumbs up", color="#4caf50")
    ax_fb.bar(names, [v["down"] for v in data["variants"]], bottom=[v["up"] for v in data["variants"]],
              label="thumbs down", color="#e57373")
    ax_fb.set_title("Feedback")
    for ax in (ax_req, ax_lat, ax_err, ax_fb):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not models:
        ax_req.text(0.5, 0.5, "no requests yet", ha="center", va="center", transform=ax_req.transAxes)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
