"""What parsing in a limited child process costs a normal ingest, and what it stops.

1. Overhead: each corpus under /work/shared/corpora is ingested into a fresh workspace by
   ``ragtune ingest DOCS --json`` in a fresh process (what a user runs), parsing in that process
   (``parse_isolated=False``, no limit: the CLI run by a driver that sets it) and in the worker (the
   default), alternating which goes first, ``--repeats`` times each; the medians, the minimums and
   their ratios (worker / in-process). Then the same with ``ingest_paths`` called in this process
   (warm: the tokenizer is loaded, so the worker's start overlaps nothing: the worst case). Both modes
   must store the same documents and chunks.
2. The worker itself: start to first answer, and the round trip of a tiny file against parse_file;
   the largest worker RSS seen over the corpora.
3. Hostile files that pass every cap of the gate: 2 MB of ``<p>x</p>`` (parsed in this process, then
   in the worker with a 3 s limit) and 20 MB of it (the upload size cap) under the upload limits.

    python bench/parse_worker.py [--repeats 3] [--corpora nih-protocols ntsb-reports ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from measuring import measured, rss_mb  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
CORPORA = Path("/work/shared/corpora")
CPU: dict[tuple[str, bool], list[float]] = {}  # (corpus, worker?) -> CPU seconds of each CLI run
PEAKS: dict[str, float] = {}  # corpus -> the worker's highest resident size (MB) on its files
DEFAULT_CORPORA = ("nih-protocols", "ntsb-reports", "contoso-benefits", "contoso-manuals", "policyqa", "format-fixtures")




def ingest_once(tmp: Path, docs: Path, isolated: bool, tag: str):
    from ragtune.ingest_gate import IngestLimits
    from ragtune.workspace import Workspace
    from retrieval.ingest import ingest_paths

    from retrieval.parse_worker import ParseWorker

    ws = Workspace.create(tag, root=tmp / tag)
    result = ParseWorker.result

    def watched(self):  # the worker's peak resident size, per corpus
        try:
            return result(self)
        finally:
            PEAKS[docs.parent.name] = max(PEAKS.get(docs.parent.name, 0.0), self.peak_mb)

    ParseWorker.result = watched
    try:
        t0 = time.perf_counter()
        results = ingest_paths(ws, [docs], limits=IngestLimits(parse_isolated=isolated))
        seconds = time.perf_counter() - t0
    finally:
        ParseWorker.result = result
    return seconds, [(r.name, r.status, r.doc_id, r.chunks) for r in results]


_DRIVER = """
import sys
from retrieval.service import IngestConfig
limits = IngestConfig.limits
def in_process(self):
    chosen = limits(self)
    chosen.parse_isolated = False
    return chosen
IngestConfig.limits = in_process
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _children_cpu() -> float:
    """User + system seconds of the finished children (the CLI and its parse worker)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_once(tmp: Path, docs: Path, isolated: bool, tag: str):
    env = {**os.environ, "RAGTUNE_HOME": str(tmp / tag), "GRADIO_ANALYTICS_ENABLED": "False"}
    argv = ["-m", "app.cli"] if isolated else ["-c", _DRIVER]
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv, "ingest", str(docs), "-w", "b", "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    CPU.setdefault((docs.parent.name, isolated), []).append(_children_cpu() - cpu0)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    results = json.loads(proc.stdout)["results"]
    return seconds, [(r["name"], r["status"], r["doc_id"], r["chunks"]) for r in results]


def _cpu(name: str) -> dict:
    """Median CPU seconds of the CLI runs, both modes (what a busy machine pays: its cores are taken)."""
    if (name, True) not in CPU:
        return {}
    a, b = statistics.median(CPU[(name, False)]), statistics.median(CPU[(name, True)])
    return {"in_process_cpu_s": round(a, 3), "worker_cpu_s": round(b, 3), "cpu_ratio": round(b / a, 3)}


def overhead(tmp: Path, corpora: list[str], repeats: int, once) -> dict:
    out = {}
    for name in corpora:
        docs = CORPORA / name / "docs"
        times = {"in_process": [], "worker": []}
        seen = {}
        for rep in range(repeats):
            order = ("in_process", "worker") if rep % 2 == 0 else ("worker", "in_process")
            for mode in order:
                seconds, rows = once(tmp, docs, mode == "worker", f"{once.__name__}-{name}-{mode}-{rep}")
                times[mode].append(seconds)
                seen.setdefault(mode, rows)
        assert seen["in_process"] == seen["worker"], (name, seen)
        a, b = statistics.median(times["in_process"]), statistics.median(times["worker"])
        lo_a, lo_b = min(times["in_process"]), min(times["worker"])
        rows = seen["worker"]
        out[name] = {"files": len(rows), "added": sum(r[1] == "added" for r in rows),
                     "chunks": sum(r[3] for r in rows),
                     "in_process_s": round(a, 3), "worker_s": round(b, 3), "ratio": round(b / a, 3),
                     "in_process_min_s": round(lo_a, 3), "worker_min_s": round(lo_b, 3), "ratio_min": round(lo_b / lo_a, 3),
                     **(_cpu(name) if once is cli_once else {}),
                     "runs_in_process_s": [round(x, 3) for x in times["in_process"]],
                     "runs_worker_s": [round(x, 3) for x in times["worker"]]}
        print(once.__name__, name, out[name], flush=True)
    keys = ("in_process_s", "worker_s", "in_process_min_s", "worker_min_s", "in_process_cpu_s", "worker_cpu_s")
    total = {k: sum(v[k] for v in out.values()) for k in keys if all(k in v for v in out.values())}
    out["all"] = {**{k: round(v, 3) for k, v in total.items()},
                  "ratio": round(total["worker_s"] / total["in_process_s"], 3),
                  "ratio_min": round(total["worker_min_s"] / total["in_process_min_s"], 3)}
    if "worker_cpu_s" in total and once is cli_once:
        out["all"]["cpu_ratio"] = round(total["worker_cpu_s"] / total["in_process_cpu_s"], 3)
    print(once.__name__, "all", out["all"], flush=True)
    return out


def worker_costs(tmp: Path, n: int = 50) -> dict:
    from retrieval.formats import parse_file
    from retrieval.parse_worker import ParseWorker

    small = tmp / "small.md"
    small.write_text("# Title\n\nA short paragraph of plain words.\n")
    parse_file(small)
    t0 = time.perf_counter()
    with ParseWorker() as worker:
        worker.parse(small)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            worker.parse(small)
        per_call = (time.perf_counter() - t0) / n
        base = worker.base_mb
    t0 = time.perf_counter()
    for _ in range(n):
        parse_file(small)
    direct = (time.perf_counter() - t0) / n
    return {"start_to_first_answer_s": round(first, 3), "round_trip_ms": round(per_call * 1000, 2),
            "parse_file_in_process_ms": round(direct * 1000, 2), "worker_base_mb": base}


def hostile(tmp: Path) -> dict:
    from ragtune.ingest_gate import IngestLimits, UploadLimits
    from ragtune.workspace import Workspace
    from retrieval.formats import parse_file
    from retrieval.ingest import ingest_paths

    out = {}
    small = tmp / "paragraphs-2mb.html"
    small.write_text("<html><body>" + "<p>x</p>" * 250_000 + "</body></html>")
    big = tmp / "paragraphs-20mb.html"
    big.write_text("<html><body>" + "<p>x</p>" * 2_500_000 + "</body></html>")
    for label, path, limits in (("html_2mb_worker_3s_limit", small, IngestLimits(parse_timeout_s=3)),
                                ("html_20mb_upload_limits", big, UploadLimits())):
        ws = Workspace.create(label, root=tmp / label)
        (result,), seconds, extra = measured(lambda: ingest_paths(ws, [path], limits=limits))
        stored = sorted(p.name for p in (ws.root / "documents").iterdir())
        out[label] = {"file_mb": round(path.stat().st_size / 1048576, 1), "seconds": round(seconds, 2),
                      "extra_rss_mb_this_process": round(extra, 1), "status": result.status,
                      "reason": result.reason, "files_left_in_store": stored,
                      "limits": {"memory_mb": limits.parse_memory_mb, "timeout_s": limits.parse_timeout_s}}
        print(label, out[label], flush=True)
    doc, seconds, extra = measured(lambda: parse_file(small))  # last: what it leaves in this process stays
    out["html_2mb_in_process"] = {"seconds": round(seconds, 2), "extra_rss_mb_this_process": round(extra, 1),
                                  "blocks": len(doc.blocks)}
    print("html_2mb_in_process", out["html_2mb_in_process"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--corpora", nargs="+", default=list(DEFAULT_CORPORA))
    ap.add_argument("--skip-hostile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = {"cpus": os.cpu_count(), "repeats": args.repeats,
                  "cli": overhead(tmp, args.corpora, args.repeats, cli_once),
                  "library_warm": overhead(tmp, args.corpora, args.repeats, ingest_once),
                  "worker_peak_rss_mb": PEAKS,
                  "worker": worker_costs(tmp)}
        if not args.skip_hostile:
            result["hostile"] = hostile(tmp)
    print(json.dumps(result, indent=2))
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "parse_worker.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
