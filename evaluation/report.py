"""Export a run as a Markdown or HTML report with tables and plots, and a CSV of every answer.

Files go to ``<workspace>/reports/<run_id>/``: ``report.md`` with its PNG plots beside it, or a
self-contained ``report.html`` (plots embedded as base64 PNG), and ``answers.csv`` either way.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path

from ragtune.atomic import atomic_write_bytes, atomic_write_text
from ragtune.errors import BadInputError

from .arena import leaderboard
from .metrics import CORRECTNESS_METRICS, METRIC_DOCS
from .runner import SUMMARY_METRICS, load_run, summarize

RETRIEVAL_METRICS = ("groundedness", "context_recall", "hit_at_k", "citation_accuracy", "citation_rate")
SPEED_METRICS = ("latency_s", "ttft_s")
CSV_FIELDS = ["idx", "question", "reference", "gold_doc", "gold_page", "variant", "adapter", "answer", "citations",
              "retrieved", "prompt_tokens", "completion_tokens", "ttft_s", "latency_s"]


def _mpl():
    import matplotlib  # heavy optional library: only when a report is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar_plot(summary: dict, metrics: tuple[str, ...], title: str, ylabel: str) -> bytes | None:
    """Grouped bars: one group per metric, one bar per variant, 95% intervals as error bars."""
    variants = list(summary["variants"])
    metrics = [m for m in metrics if any(m in v["metrics"] for v in summary["variants"].values())]
    if not metrics or not variants:
        return None
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(metrics) * max(1, len(variants)) / 2.5, 3.6), dpi=110)
    width = 0.8 / len(variants)
    for j, label in enumerate(variants):
        means, lows, highs, xs = [], [], [], []
        for i, metric in enumerate(metrics):
            m = summary["variants"][label]["metrics"].get(metric)
            if not m or m["mean"] is None:
                continue
            xs.append(i + (j - (len(variants) - 1) / 2) * width)
            means.append(m["mean"])
            lows.append(m["mean"] - m["ci_low"])
            highs.append(m["ci_high"] - m["mean"])
        if xs:
            ax.bar(xs, means, width * 0.95, yerr=[lows, highs], capsize=3, label=label)
    ax.set_xticks(range(len(metrics)), [m.replace("_", " ") for m in metrics])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _leaderboard_plot(board: list[dict]) -> bytes | None:
    if not board:
        return None
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5, 0.6 + 0.5 * len(board)), dpi=110)
    names = [r["variant"] for r in board][::-1]
    ratings = [r["rating"] for r in board][::-1]
    err = [[r["rating"] - r["ci_low"] for r in board][::-1], [r["ci_high"] - r["rating"] for r in board][::-1]]
    ax.barh(names, [x - 1000 for x in ratings], left=1000, xerr=err, capsize=3, color="#4c72b0")
    ax.axvline(1000, color="grey", lw=0.8)
    ax.set_xlabel("Bradley-Terry rating (Elo scale, 95% bootstrap CI)")
    ax.set_title("Blind arena")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _cell(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None:
        return "-"
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _metric_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    variants = summary["variants"]
    shown = [m for m in SUMMARY_METRICS if any(m in v["metrics"] for v in variants.values())]
    return ["metric", *variants], [[m] + [_cell(variants[label]["metrics"].get(m)) for label in variants] for m in shown]


def _paired_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    rows = [[p["a"], p["b"], p["metric"], str(p["n"]), _signed(p["mean_diff"]),
             f"[{_signed(p['ci_low'])}, {_signed(p['ci_high'])}]",
             "-" if p["p_value"] is None else f"{p['p_value']:.3g}", "yes" if p["significant"] else "no"]
            for p in summary["paired"]]
    return ["a", "b", "metric", "n", "mean diff", "95% CI", "Wilcoxon p", "significant"], rows


METRICS_TITLE = "Metrics: mean [95% bootstrap CI]"
PAIRED_TITLE = "Paired comparisons (a - b on the same questions)"


def _tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table in the report."""
    variants = summary["variants"]
    cost_rows = [[label, str(v["answered"]), str(v["cost"]["tokens_served"]), f"{v['cost']['generation_s']:.1f}",
                  "-" if v["cost"].get("training_time_s") is None else f"{v['cost']['training_time_s']:.0f}",
                  "-" if v["cost"].get("gpu_hours") is None else f"{v['cost']['gpu_hours']:.3f}"]
                 for label, v in variants.items()]
    shown = [m for m in SUMMARY_METRICS if any(m in v["metrics"] for v in variants.values())]
    docs = [[m, METRIC_DOCS.get(m, "")] for m in shown]
    return [
        (METRICS_TITLE, *_metric_table(summary)),
        ("Cost", ["variant", "answers", "tokens served", "generation s", "training s", "GPU-hours"], cost_rows),
        (PAIRED_TITLE, *_paired_table(summary)),
        ("What each metric means", ["metric", "definition"], docs),
    ]


def summary_markdown(summary: dict) -> str:
    """The metrics and paired-comparison tables and the recommendation, as Markdown (what the benches print)."""
    return "\n\n".join([f"{METRICS_TITLE}\n\n{_md_table(*_metric_table(summary))}",
                        f"{PAIRED_TITLE}\n\n{_md_table(*_paired_table(summary))}",
                        summary["recommendation"]["text"]])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_answers_csv(run, path: Path) -> Path:
    metric_names = sorted({k for r in run.results for k, v in r["metrics"].items() if not isinstance(v, (dict, list))})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS + [m for m in metric_names if m not in CSV_FIELDS],
                            extrasaction="ignore")
    writer.writeheader()
    for r in run.results:
        item, answer = run.rows[r["idx"]], r["answer"]
        writer.writerow({
            "idx": r["idx"], "question": item["question"], "reference": item["answer"], "gold_doc": item.get("doc"),
            "gold_page": item.get("page"), "variant": r["variant"], "adapter": answer.get("adapter"),
            "answer": answer.get("text", ""),
            "citations": "; ".join(f"[{c.get('n')}] {c.get('citation')}" for c in answer.get("citations") or []),
            "retrieved": "; ".join(str(p.get("citation")) for p in answer.get("passages") or []),
            **{k: v for k, v in r["metrics"].items() if not isinstance(v, (dict, list))},
        })
    return atomic_write_text(path, buf.getvalue())


def export_report(ws, run_id: str, fmt: str = "md") -> Path:
    """Write the report (and answers.csv beside it); returns the report's path."""
    if fmt not in ("md", "html"):
        raise BadInputError(f"Unknown report format '{fmt}': use md or html.")
    run = load_run(ws, run_id)
    summary = summarize(run)
    folder = ws.path("reports", run_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_answers_csv(run, folder / "answers.csv")
    board = leaderboard(ws)
    meta = (f"{summary['n']} questions ({summary.get('source') or 'test set'}), model {summary.get('model')}, "
            f"variants {', '.join(summary['variants'])}, status {run.status}.")
    page = _ReportPage(title=f"ragtune evaluation {run_id}", meta=meta, recommendation=summary["recommendation"],
                       plots=_plots(summary, board), tables=_report_tables(summary, board),
                       judge=summary.get("judge"))
    return _write_markdown(folder, page) if fmt == "md" else _write_html(folder, page)


@dataclass
class _ReportPage:
    """What a report shows, whichever format writes it."""
    title: str
    meta: str
    recommendation: dict
    plots: dict[str, bytes]  # name -> PNG
    tables: list[tuple[str, list[str], list[list[str]]]]
    judge: dict | None


def _plots(summary: dict, board: list[dict]) -> dict[str, bytes]:
    plots = {
        "correctness": _bar_plot(summary, CORRECTNESS_METRICS, "Correctness against the reference", "score (0-1)"),
        "retrieval": _bar_plot(summary, RETRIEVAL_METRICS, "Grounding, retrieval and citations", "score (0-1)"),
        "latency": _bar_plot(summary, SPEED_METRICS, "Speed", "seconds"),
        "arena": _leaderboard_plot(board),
    }
    return {k: v for k, v in plots.items() if v}


def _report_tables(summary: dict, board: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The summary's tables, with the blind arena's leaderboard before the metric definitions when it has one."""
    tables = _tables(summary)
    if board:
        tables.insert(3, ("Blind arena (Bradley-Terry, Elo scale)", ["variant", "rating", "95% CI", "battles"],
                          [[r["variant"], f"{r['rating']:.0f}", f"[{r['ci_low']:.0f}, {r['ci_high']:.0f}]",
                            str(r["battles"])] for r in board]))
    return tables


def _write_markdown(folder: Path, page: _ReportPage) -> Path:
    """report.md with its plots as PNG files beside it."""
    for name, png in page.plots.items():
        atomic_write_bytes(folder / f"{name}.png", png)
    rec, judge = page.recommendation, page.judge
    parts = [f"# {page.title}", page.meta, "## Recommendation", f"**{rec['label']}**", rec["text"].replace("\n", "  \n")]
    parts += [f"![{name}]({name}.png)" for name in page.plots]
    for t, header, rows in page.tables:
        parts += [f"## {t}", _md_table(header, rows) if rows else "_none_"]
    if judge:
        parts += ["## LLM judge prompt", f"Model {judge['model']} at {judge['url']}:", "```", judge["prompt"], "```"]
    parts.append("Every answer, with its citations and per-question scores: [answers.csv](answers.csv)")
    return atomic_write_text(folder / "report.md", "\n\n".join(parts) + "\n")


_HTML_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
               "pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}img{max-width:100%}")


def _write_html(folder: Path, page: _ReportPage) -> Path:
    """A self-contained report.html: the plots embedded as base64 PNG."""
    imgs = "".join(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/></figure>'
                   for name, png in page.plots.items())
    rec = page.recommendation
    body = [f"<h1>{html.escape(page.title)}</h1>", f"<p>{html.escape(page.meta)}</p>", "<h2>Recommendation</h2>",
            f"<p><strong>{html.escape(rec['label'])}</strong></p>",
            "<pre class='rec'>" + html.escape(rec["text"]) + "</pre>", imgs]
    for t, header, rows in page.tables:
        body += [f"<h2>{html.escape(t)}</h2>", _html_table(header, rows) if rows else "<p>none</p>"]
    if page.judge:
        body += ["<h2>LLM judge prompt</h2>", f"<pre>{html.escape(page.judge['prompt'])}</pre>"]
    body.append('<p>Every answer: <a href="answers.csv">answers.csv</a></p>')
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(page.title)}</title>"
           f"<style>{_HTML_STYLE}</style></head><body>{''.join(body)}</body></html>")
    return atomic_write_text(folder / "report.html", doc)
