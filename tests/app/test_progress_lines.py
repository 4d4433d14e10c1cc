"""Long commands say how far they are when their output goes to a file, not only on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

from ragtune.progress import progress_bar
from ragtune.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def test_redirected_bar_prints_whole_lines_with_count_rate_and_eta_even_during_a_long_step():
    out = io.StringIO()  # not a terminal
    bar = progress_bar(total=4, desc="evaluating", unit="answer", file=out, interval=0.05)
    bar.update_to(1, 4, "first question")
    long_step = threading.Event()
    long_step.wait(0.5)  # one answer that takes many intervals: the ticker keeps reporting
    bar.update_to(4, 4)
    bar.close()
    lines = [ln for ln in out.getvalue().split("\n") if ln]
    assert "\r" not in out.getvalue()
    during = [ln for ln in lines if "1/4" in ln]
    assert len(during) >= 2, lines
    assert any("4/4" in ln for ln in lines)
    assert all(ln.startswith("evaluating:") for ln in lines)
    assert "answer/s" in lines[-1] and "<" in lines[-1]  # rate and remaining time (tqdm's elapsed<remaining)


def test_eval_redirected_reports_progress_and_the_engine(tmp_path, tiny_llm):
    home = tmp_path / "home"
    Workspace.create("quiet", root=home / "workspaces")
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "RAGTUNE_PROGRESS_INTERVAL": "0.2"}
    with open(tmp_path / "err.log", "w") as err:
        done = subprocess.run([sys.executable, "-m", "app.cli", "eval", "-w", "quiet", "--qa", "sample",
                               "--variants", "base", "--limit", "3", "--model", "tiny-llama", "--max-tokens", "4"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    log = (tmp_path / "err.log").read_text()
    assert done.returncode == 0, log[-2000:]
    assert "evaluating:" in log and "3/3" in log and "answer/s" in log
    assert "on the embedded engine" in done.stdout


def test_a_job_with_phases_prints_one_bar_per_phase_and_nothing_when_disabled():
    from ragtune.progress import PhaseProgress

    out = io.StringIO()
    bar = PhaseProgress("ingesting", unit="file", file=out)
    for done in (0, 1, 2):
        bar(done, 2, "a.pdf")
    bar(0, 54, "embedding chunks")  # the index phase of `ragtune ingest --index`: a new bar, named by its label
    bar(54, 54, "embedding chunks")
    bar.close()
    lines = [ln for ln in out.getvalue().split("\n") if ln]
    assert any(ln.startswith("ingesting:") and "2/2" in ln for ln in lines), lines
    assert lines[-1].startswith("embedding chunks:") and "54/54" in lines[-1], lines

    quiet = PhaseProgress("ingesting", file=out, disable=True)  # --json: no bar, and no error
    quiet(0, 2, "a.pdf")
    quiet(5, 9, "embedding chunks")
    quiet.close()


def test_ingest_and_index_json_output_stays_clean_and_names_the_job(tmp_path):
    import json

    home = tmp_path / "home"
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(REPO / "datasets" / "sample" / "faq.md"),
                           "-w", "quietjson", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert [r["status"] for r in result["results"]] == ["added"] and result["job"].startswith("ingest-")
    assert done.stderr.strip() == "", done.stderr
