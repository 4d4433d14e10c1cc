"""What ``ragtune ingest`` of a text file at the size limit (200 MB) costs in time and memory.

Files are generated under a temporary folder (never in the repository), each a little under the
200 MB per-file limit, from a fixed seed:

- ``paragraphs.txt``: many paragraphs of a few sentences (blank line between them);
- ``one-paragraph.txt``: the same kind of text with no newline at all (one 200 MB paragraph);
- ``headings.md``: Markdown sections (a heading every 20 paragraphs);
- ``rows.csv`` / ``records.jsonl``: rows of three text columns / records of two text fields.

Each is ingested by ``python -m app.cli ingest FILE -w b --json`` into a fresh RAGTUNE_HOME (what a
user runs). The process tree (the CLI and its parse worker) is sampled with psutil every 50 ms: the
peak of the tree's summed RSS, and each process's own peak. A run past ``--kill-mb`` of summed RSS or
``--timeout`` seconds is killed and reported as such (the code before this bench went past 6 GB).

    python bench/big_text_ingest.py [--files one-paragraph.txt paragraphs.txt ...] [--mb 199.9]
                                    [--out bench/results/big_text_ingest.json] [--label after]
                                    [--baseline-tree DIR]   # the same files by another checkout first, and the ratios
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
FILES = ("paragraphs.txt", "one-paragraph.txt", "headings.md", "rows.csv", "records.jsonl")


def _sentences(rng: random.Random, n: int = 4000) -> list[str]:
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 24))).capitalize() + rng.choice(".!?;.")
            for _ in range(n)]


def generate(path: Path, size: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    sents = _sentences(rng)
    kind = path.name
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        if kind.endswith(".csv"):
            f.write("title,summary,body\n")
        i = 0
        while written < size:
            if kind == "one-paragraph.txt":
                piece = " ".join(rng.choices(sents, k=50)) + " "
            elif kind == "paragraphs.txt":
                piece = " ".join(rng.choices(sents, k=rng.randint(1, 6))) + "\n\n"
            elif kind == "headings.md":
                head = f"## Section {i}\n\n" if i % 20 == 0 else ""
                piece = head + " ".join(rng.choices(sents, k=rng.randint(1, 6))) + "\n\n"
            elif kind == "rows.csv":
                a, b, c = (" ".join(rng.choices(sents, k=k)).replace('"', "") for k in (1, 2, 4))
                piece = f'"{a}","{b}","{c}"\n'
            else:
                piece = json.dumps({"question": rng.choice(sents), "answer": " ".join(rng.choices(sents, k=4))}) + "\n"
            piece = piece[: size - written] if written + len(piece) > size else piece
            f.write(piece)
            written += len(piece)
            i += 1


def run_ingest(path: Path, home: Path, kill_mb: float, timeout: float, tree: Path = REPO) -> dict:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "ingest", str(path), "-w", "b", "--json"], env=env,
                            cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak_sum, peaks, killed = 0.0, {}, None
    import threading

    out: dict[str, str] = {}

    def drain():
        out["stdout"], out["stderr"] = proc.communicate()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            rss = {}
            for p in tree:
                try:
                    rss[p.pid] = p.memory_info().rss / MB
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak_sum = max(peak_sum, sum(rss.values()))
        for pid, r in rss.items():
            peaks[pid] = max(peaks.get(pid, 0.0), r)
        elapsed = time.perf_counter() - t0
        if killed is None and (peak_sum > kill_mb or elapsed > timeout):
            killed = f"killed at {peak_sum:.0f} MB summed RSS after {elapsed:.1f} s"
            for p in reversed(tree):
                try:
                    p.kill()
                except psutil.Error:
                    pass
        time.sleep(0.05)
    reader.join()
    seconds = time.perf_counter() - t0
    cli_peak = peaks.get(proc.pid, 0.0)
    worker_peak = max((v for k, v in peaks.items() if k != proc.pid), default=0.0)
    row = {"seconds": round(seconds, 1), "peak_tree_rss_mb": round(peak_sum), "peak_cli_rss_mb": round(cli_peak),
           "peak_worker_rss_mb": round(worker_peak), "returncode": proc.returncode, "killed": killed}
    try:
        result = json.loads(out.get("stdout") or "")["results"][0]
        row.update(status=result["status"], chunks=result["chunks"], reason=result.get("reason"))
    except (ValueError, KeyError, IndexError, TypeError):
        row["stderr_tail"] = (out.get("stderr") or "")[-400:]
    if row.get("status") == "added":
        row["max_chunk_tokens"] = _max_tokens(home)
    return row


def _max_tokens(home: Path) -> int | None:
    import sqlite3

    dbs = list(home.rglob("*.db")) + list(home.rglob("*.sqlite*"))
    for db in dbs:
        try:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT MAX(tokens) FROM retrieval_chunks").fetchone()[0]
        except sqlite3.Error:
            continue
    return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", nargs="+", default=list(FILES), choices=FILES)
    ap.add_argument("--mb", type=float, default=199.9, help="size of each generated file (the limit is 200 MB)")
    ap.add_argument("--kill-mb", type=float, default=4000.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--label", default="after")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="a checkout of the code to compare with (git worktree add DIR COMMIT): each file is "
                         "ingested by it first, then by this tree, and the ratios are written")
    ap.add_argument("--out", default=str(REPO / "bench/results/big_text_ingest.json"))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="big-text-"))
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    try:
        for name in args.files:
            path = tmp / name
            generate(path, int(args.mb * MB))
            if args.baseline_tree:
                base = run_ingest(path, tmp / f"home-base-{name}", args.kill_mb, args.timeout, args.baseline_tree)
                base["file_mb"] = round(path.stat().st_size / MB, 1)
                print(name, "baseline", json.dumps(base), flush=True)
                report.setdefault(f"{args.label}-baseline", {})[name] = base
                shutil.rmtree(tmp / f"home-base-{name}", ignore_errors=True)
            row = run_ingest(path, tmp / f"home-{name}", args.kill_mb, args.timeout)
            row["file_mb"] = round(path.stat().st_size / MB, 1)
            print(name, json.dumps(row), flush=True)
            report.setdefault(args.label, {})[name] = row
            if args.baseline_tree and not base["killed"] and not row["killed"]:
                report.setdefault(f"{args.label}-ratio", {})[name] = {
                    key: round(row[key] / base[key], 3) for key in ("seconds", "peak_tree_rss_mb", "peak_cli_rss_mb",
                                                                   "peak_worker_rss_mb") if base[key]}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
            path.unlink()
            shutil.rmtree(tmp / f"home-{name}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
