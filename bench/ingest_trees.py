"""``ragtune ingest`` of the shared corpora by this checkout against another one (a baseline commit).

Each corpus under /work/shared/corpora is ingested into a fresh home by ``python -m app.cli ingest DOCS
--json`` run from each tree, alternating which goes first, ``--repeats`` times each: the medians, the
minimums, their ratios (this tree / baseline), the median CPU seconds of the CLI and its parse worker
and their ratio (the figure other jobs on a shared machine disturb least), the peak RSS of the process tree, and a check that both
trees stored the same documents with the same chunk counts.

    git worktree add /tmp/base COMMIT     # or: git archive COMMIT | tar -x -C /tmp/base
    python bench/ingest_trees.py --baseline-tree /tmp/base [--repeats 3] [--corpora nih-protocols ...]
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
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path("/work/shared/corpora")
DEFAULT_CORPORA = ("nih-protocols", "ntsb-reports", "contoso-benefits", "contoso-manuals", "policyqa", "format-fixtures")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ingest_once(tree: Path, docs: Path, home: Path) -> tuple[float, float, float, list]:
    """(seconds, CPU seconds of the CLI and its parse worker, peak summed RSS of them in MB,
    [(name, status, doc_id, chunks)]). CPU time is what a shared machine's other jobs disturb least."""
    env = {**os.environ, "RAGTUNE_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "ingest", str(docs), "-w", "b", "--json"], env=env,
                            cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, out = 0.0, {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree_rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            peak = max(peak, tree_rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.02)
    reader.join()
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    assert proc.returncode in (0, 1), out.get("stderr", "")[-2000:]
    results = json.loads(out["stdout"])["results"]
    return seconds, cpu, peak, [(r["name"], r["status"], r["doc_id"], r["chunks"]) for r in results]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-tree", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--corpora", nargs="+", default=list(DEFAULT_CORPORA))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ingest_trees.json"))
    args = ap.parse_args()
    trees = {"baseline": args.baseline_tree.resolve(), "this": REPO}
    report: dict = {"baseline_tree": str(trees["baseline"]), "repeats": args.repeats, "corpora": {}}
    with tempfile.TemporaryDirectory(prefix="ingest-trees-") as tmp:
        for name in args.corpora:
            docs = CORPORA / name / "docs"
            runs = {k: [] for k in trees}
            cpus = {k: [] for k in trees}
            peaks = {k: [] for k in trees}
            rows = {}
            for rep in range(args.repeats):
                for label in (("baseline", "this") if rep % 2 == 0 else ("this", "baseline")):
                    seconds, cpu, peak, got = ingest_once(trees[label], docs, Path(tmp) / f"{name}-{label}-{rep}")
                    runs[label].append(seconds)
                    cpus[label].append(cpu)
                    peaks[label].append(peak)
                    rows.setdefault(label, got)
            assert rows["baseline"] == rows["this"], (name, rows)
            med = {k: statistics.median(v) for k, v in runs.items()}
            cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
            report["corpora"][name] = {
                "files": len(rows["this"]), "chunks": sum(r[3] for r in rows["this"]),
                "baseline_s": round(med["baseline"], 3), "this_s": round(med["this"], 3),
                "ratio": round(med["this"] / med["baseline"], 3),
                "ratio_min": round(min(runs["this"]) / min(runs["baseline"]), 3),
                "baseline_cpu_s": round(cpu_med["baseline"], 3), "this_cpu_s": round(cpu_med["this"], 3),
                "cpu_ratio": round(cpu_med["this"] / cpu_med["baseline"], 3),
                "baseline_peak_mb": round(max(peaks["baseline"])), "this_peak_mb": round(max(peaks["this"])),
                "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()}}
            print(name, report["corpora"][name], flush=True)
    total = {k: sum(c[k] for c in report["corpora"].values())
             for k in ("baseline_s", "this_s", "baseline_cpu_s", "this_cpu_s")}
    report["all"] = {**{k: round(v, 3) for k, v in total.items()},
                     "ratio": round(total["this_s"] / total["baseline_s"], 3),
                     "cpu_ratio": round(total["this_cpu_s"] / total["baseline_cpu_s"], 3)}
    print("all", report["all"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
