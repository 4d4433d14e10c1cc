"""Issue 24's "Must show", end to end: the two hostile files through `ragtune ingest`, the deploy server's
HTTP upload and the builder app, each refused or done in under 30 s and under 1,500 MB peak RSS, with a
concurrent chat answered in under 2 s (servers and apps only).

Files, built under a temp dir: a PDF of one page whose one FlateDecode content stream inflates to
``--pdf-mb`` MB (about 1 MB on disk), a DOCX of 1,000 paragraphs and ``--styles`` paragraph styles, and
datasets/sample/travel_policy.docx as the baseline of the same run.

A. CLI: ``python -m app.cli ingest FILE -w cli`` in a fresh process (RAGTUNE_HOME in the temp dir): wall
   time, exit code, its message, peak RSS of its process tree (it and its parse worker).
B. HTTP: ``ragtune deploy -w bench --variant rag --model tiny-llama`` (RAGTUNE_BUILDER_PASSWORD set) over
   a workspace holding the sample data (less the baseline file), ingested and indexed; each file is POSTed
   to /builder/bench/documents; the route's status and reply time, the ingest job followed to its end, the
   server tree's peak RSS (server, engine, job, parse worker) and chat requests to /v1/chat/completions
   sent with the upload and while its job runs.
C. Builder app: ``ragtune app --model tiny-llama --workspace bench`` over the same kind of home; each
   file goes to the ``/ingest`` endpoint (gradio_client) into workspace 'uploads' while ``/ask`` asks
   'bench' a question; outcome row, time, the app tree's peak RSS, the ask's latency.

RSS: the sum over the process tree (psutil, every 50 ms), and its rise over the tree's RSS just before
the file was sent. Pass/fail is printed against the issue's thresholds, not asserted.

    python bench/hostile_uploads.py [--pdf-mb 256] [--styles 20000] [--paths A B C]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLE = REPO / "datasets" / "sample"
BASELINE = SAMPLE / "travel_policy.docx"
MB = 1 << 20
LIMIT_S, LIMIT_MB, CHAT_S = 30.0, 1500.0, 2.0
PASSWORD = "bench-pw"
QUESTION = "What is the maximum payload of the K7 Pallet Pilot?"


# ------------------------------------------------------------------ the files

def pdf_bomb(path: Path, inflated_mb: int) -> Path:
    """One page; its content stream is `inflated_mb` MB of text operators deflated at level 9."""
    unit = b"BT /F1 12 Tf 72 700 Td (x) Tj ET\n"
    packer = zlib.compressobj(9)
    block = unit * (MB // len(unit))
    body = packer.compress(b"BT /F1 12 Tf 72 720 Td (Hello bomb) Tj ET\n")
    body += b"".join(packer.compress(block) for _ in range(inflated_mb)) + packer.flush()
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
           b"/Resources << /Font << /F1 5 0 R >> >> >>",
        4: b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
        5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    out, where = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"), {}
    for number, obj in objects.items():
        where[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = len(out)
    out += b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % where[n] for n in range(1, 6))
    out += b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path


def styled_docx(path: Path, styles: int, paragraphs: int = 1000) -> Path:
    """`paragraphs` paragraphs, a heading every tenth, the others in one of `styles` custom paragraph styles
    (as tests/retrieval/test_office_limits.py builds it)."""
    import docx
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    document = docx.Document()
    element = document.styles.element
    for i in range(styles):
        element.append(parse_xml(f'<w:style {w} w:type="paragraph" w:styleId="Custom{i}">'
                                 f'<w:name w:val="Custom {i}"/></w:style>'))
    for i in range(paragraphs):
        if i % 10 == 0:
            document.add_paragraph(f"Part {i // 10}")._p.style = "Heading1" if i % 20 == 0 else "Heading2"
        else:
            document.add_paragraph(f"Paragraph {i} says something.")._p.style = f"Custom{i % styles}"
    document.save(path)
    return path


# ------------------------------------------------------------------ measuring

class TreeRSS:
    """Peaks of a process tree's memory, polled every 50 ms in a thread: the sum of RSS (as asked), the sum
    of PSS (shared pages counted once: a child forked by a 900 MB server shows the server's pages as its own
    RSS until it execs, which the RSS sum counts twice) and the largest one process's RSS; the processes
    seen at the RSS-sum peak."""

    def __init__(self, pid: int, every: float = 0.05):
        import psutil

        self.proc, self.every = psutil.Process(pid), every
        self.start_mb = self.peak_mb = self.start_pss_mb = self.peak_pss_mb = self.peak_one_mb = 0.0
        self.at_peak: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, float, float, list]:
        """(RSS sum, PSS sum, largest RSS) in MB and [(name, pid, RSS MB)] of the tree now."""
        import psutil

        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0.0, 0.0, 0.0, []
        rss = pss = biggest = 0.0
        seen = []
        for p in procs:
            try:
                info = p.memory_full_info()
                name = " ".join(p.cmdline()[1:4])[:80] or p.name()
            except psutil.Error:
                continue
            rss, pss, biggest = rss + info.rss / MB, pss + info.pss / MB, max(biggest, info.rss / MB)
            seen.append([name, p.pid, round(info.rss / MB, 1)])
        return rss, pss, biggest, seen

    def now(self) -> float:
        return self.sample()[0]

    def _take(self):
        rss, pss, biggest, seen = self.sample()
        if rss > self.peak_mb:
            self.peak_mb, self.at_peak = rss, seen
        self.peak_pss_mb, self.peak_one_mb = max(self.peak_pss_mb, pss), max(self.peak_one_mb, biggest)

    def _run(self):
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.every)

    def __enter__(self):
        rss, pss, biggest, seen = self.sample()
        self.start_mb = self.peak_mb = rss
        self.start_pss_mb = self.peak_pss_mb = pss
        self.peak_one_mb, self.at_peak = biggest, seen
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._take()

    def figures(self) -> dict:
        return {"rss_before_mb": round(self.start_mb, 1), "peak_rss_mb": round(self.peak_mb, 1),
                "peak_rise_mb": round(self.peak_mb - self.start_mb, 1),
                "pss_before_mb": round(self.start_pss_mb, 1), "peak_pss_mb": round(self.peak_pss_mb, 1),
                "largest_process_peak_mb": round(self.peak_one_mb, 1), "processes_at_rss_peak": self.at_peak}


def env_for(home: Path, **extra) -> dict:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}
    env.pop("RAGTUNE_WORKSPACES", None)
    env.pop("RAGTUNE_WORKSPACE", None)
    return env


def cli(home: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *argv], env=env_for(home), cwd=REPO,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ragtune {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def prepared_home(home: Path) -> float:
    """Workspace 'bench' with the sample data but the baseline file, ingested and indexed; 'uploads' empty."""
    t0 = time.perf_counter()
    docs = [str(p) for p in sorted(SAMPLE.iterdir()) if p.is_file() and p != BASELINE]
    cli(home, "workspace", "create", "bench")
    cli(home, "workspace", "create", "uploads")
    cli(home, "ingest", *docs, "-w", "bench", "--index")
    return time.perf_counter() - t0


def message_of(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


# ------------------------------------------------------------------ A: the CLI

def path_cli(tmp: Path, files: dict[str, Path]) -> dict:
    home = tmp / "home-cli"
    cli(home, "workspace", "create", "cli")
    cli(home, "ingest", str(SAMPLE / "faq.md"), "-w", "cli")  # caches warm, as a user's second ingest
    out = {}
    for label, path in files.items():
        t0 = time.perf_counter()
        maxrss = tmp / f"maxrss-{label}"  # GNU time: the largest one process of the tree (the CLI waits for all)
        timer = ["/usr/bin/time", "-o", str(maxrss), "-f", "%M"] if Path("/usr/bin/time").exists() else []
        proc = subprocess.Popen([*timer, sys.executable, "-m", "app.cli", "ingest", str(path), "-w", "cli"],
                                env=env_for(home), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        with TreeRSS(proc.pid) as rss:
            stdout, stderr = proc.communicate()
        seconds = time.perf_counter() - t0
        lines = [line for line in stdout.splitlines() if line.strip()]
        message = next((line for line in lines if line.split()[0] in ("added", "failed", "duplicate", "skipped")),
                       message_of(stderr))
        out[label] = {"seconds": round(seconds, 2), "exit_code": proc.returncode,
                      "message": " ".join(message.split()), "stdout_tail": stdout.strip()[-600:],
                      "stderr_tail": stderr.strip()[-300:], **rss.figures()}
        if timer and maxrss.exists() and maxrss.read_text().strip().isdigit():
            out[label]["max_one_process_rss_mb_gnu_time"] = round(int(maxrss.read_text().strip()) / 1024, 1)
        print("A", label, out[label], flush=True)
    return out


# ------------------------------------------------------------------ B: the deploy server's upload route

def _wait_http(url: str, proc, log: Path, timeout: float = 300, **kwargs) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=3, **kwargs).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


class Timed(threading.Thread):
    """fn() in a thread after `delay` s: its seconds and result (or error)."""

    def __init__(self, fn, delay: float = 0.0):
        super().__init__(daemon=True)
        self.fn, self.delay = fn, delay
        self.seconds = self.result = self.error = None

    def run(self):
        time.sleep(self.delay)
        t0 = time.perf_counter()
        try:
            self.result = self.fn()
        except Exception as exc:  # recorded, not raised: a failed chat is a finding
            self.error = f"{type(exc).__name__}: {exc}"[:400]
        self.seconds = round(time.perf_counter() - t0, 3)

    def figures(self) -> dict:
        return {"seconds": self.seconds, "ok": self.error is None and bool(self.result),
                **({"error": self.error} if self.error else {})}


def path_http(tmp: Path, files: dict[str, Path], port: int) -> dict:
    import httpx

    from ragtune.jobs import JobStatus
    from ragtune.tether import stop_group, tethered_popen

    home = tmp / "home-http"
    setup_s = prepared_home(home)
    key = json.loads(cli(home, "keys", "create", "-w", "bench", "bench", "--rate", "10000", "--json").stdout)["key"]
    log = home / "deploy.log"
    argv = [sys.executable, "-m", "app.cli", "deploy", "-w", "bench", "--variant", "rag", "--model", "tiny-llama",
            "--port", str(port)]
    with open(log, "wb") as out_log:
        proc = tethered_popen(argv, cwd=REPO, env=env_for(home, RAGTUNE_BUILDER_PASSWORD=PASSWORD), stdout=out_log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    builder = {"auth": ("builder", PASSWORD), "headers": {"X-Ragtune-Builder": "1"}}
    out: dict = {"setup_s": round(setup_s, 1)}
    try:
        _wait_http(url + "/v1/models", proc, log, headers={"Authorization": f"Bearer {key}"})

        def chat() -> bool:
            r = httpx.post(url + "/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {key}"},
                           json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8})
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
            return True

        idle = [Timed(chat) for _ in range(3)]
        for t in idle:  # the first loads what a chat needs; the rest are the idle latency
            t.run()
        out["chat_idle_s"] = [t.seconds for t in idle]
        print("B chat idle", out["chat_idle_s"], flush=True)
        for label, path in files.items():
            row: dict = {}
            with TreeRSS(proc.pid) as rss:
                with_upload = Timed(chat, delay=0.05)
                with_upload.start()
                t0 = time.perf_counter()
                r = httpx.post(url + "/builder/bench/documents", timeout=300, **builder,
                               files=[("files", (path.name, path.read_bytes(), "application/octet-stream"))])
                row["status_code"], row["reply_s"] = r.status_code, round(time.perf_counter() - t0, 3)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                chats = [with_upload]
                if r.status_code == 202:
                    during = Timed(chat)
                    during.start()
                    chats.append(during)
                    while True:
                        job = httpx.get(url + body["follow"], timeout=30, **builder).json()
                        if not JobStatus(job["status"]).running or time.perf_counter() - t0 > 600:
                            break
                        time.sleep(0.1)
                    row["job_status"] = job["status"]
                    results = (job.get("result") or {}).get("results") or []
                    row["files"] = [{k: x.get(k) for k in ("name", "status", "chunks", "reason")} for x in results]
                    row["message"] = job.get("error") or "; ".join(
                        f"{x.get('name')}: {x.get('status')}" + (f" ({x.get('reason')})" if x.get("reason") else "")
                        for x in results)
                else:
                    row["message"] = ((body.get("error") or {}).get("message") if body else r.text[:400])
                row["done_s"] = round(time.perf_counter() - t0, 2)
                for t in chats:
                    t.join()
            row["chats"] = [t.figures() for t in chats]
            row["chat_max_s"] = max(t.seconds for t in chats)
            row.update(rss.figures())
            out[label] = row
            print("B", label, row, flush=True)
        out["server_rss_after_mb"] = round(TreeRSS(proc.pid).now(), 1)
    finally:
        stop_group(proc, timeout=20)
        out["server_log_tail"] = log.read_text(errors="replace")[-1500:]
    return out


# ------------------------------------------------------------------ C: the builder app

def path_app(tmp: Path, files: dict[str, Path], port: int) -> dict:
    from gradio_client import Client, handle_file

    from ragtune.tether import stop_group, tethered_popen

    home = tmp / "home-app"
    setup_s = prepared_home(home)
    log = home / "app.log"
    uploads = tmp / "gradio-uploads"
    uploads.mkdir()
    argv = [sys.executable, "-m", "app.cli", "app", "--model", "tiny-llama", "--workspace", "bench",
            "--port", str(port)]
    with open(log, "wb") as out_log:
        proc = tethered_popen(argv, cwd=REPO, env=env_for(home, GRADIO_TEMP_DIR=str(uploads)), stdout=out_log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    out: dict = {"setup_s": round(setup_s, 1)}
    try:
        _wait_http(url + "/", proc, log)

        def ask() -> bool:
            answer = Client(url, verbose=False, download_files=False).predict("bench", QUESTION, "rag", "", 8,
                                                                               api_name="/ask")
            return bool(answer.get("text"))

        idle = [Timed(ask) for _ in range(3)]
        for t in idle:
            t.run()
        out["ask_idle_s"] = [t.seconds for t in idle]
        print("C ask idle", out["ask_idle_s"], flush=True)
        client = Client(url, verbose=False, download_files=False)
        for label, path in files.items():
            row: dict = {}
            with TreeRSS(proc.pid) as rss:
                t0 = time.perf_counter()
                job = client.submit("uploads", [handle_file(str(path))], api_name="/ingest")
                asks = [Timed(ask, delay=0.05), Timed(ask, delay=0.3)]  # the ingest ends in about a second
                for t in asks:
                    t.start()
                try:
                    results, _, _ = job.result(timeout=600)
                    rows = results["data"]
                    row["files"] = [dict(zip(("name", "status", "chunks", "reason"), x)) for x in rows]
                    row["message"] = "; ".join(f"{x[0]}: {x[1]}" + (f" ({x[3]})" if x[3] else "") for x in rows)
                except Exception as exc:  # a refusal before the job: gr.Error
                    row["files"], row["message"] = [], f"{type(exc).__name__}: {exc}"[:400]
                row["seconds"] = round(time.perf_counter() - t0, 2)
                for t in asks:
                    t.join()
            row["asks"] = [t.figures() for t in asks]
            row["ask_max_s"] = max(t.seconds for t in asks)
            row.update(rss.figures())
            out[label] = row
            print("C", label, row, flush=True)
        out["app_rss_after_mb"] = round(TreeRSS(proc.pid).now(), 1)
        left = [p for p in uploads.rglob("*") if p.is_file() and p.stat().st_size]
        out["gradio_cache_left"] = [str(p.relative_to(uploads)) for p in left]
    finally:
        stop_group(proc, timeout=20)
        out["app_log_tail"] = log.read_text(errors="replace")[-1500:]
    return out


# ------------------------------------------------------------------ verdicts

def verdicts(out: dict) -> list[list]:
    rows = []
    for path_name, key_s, chat_key in (("cli", "seconds", None), ("http", "done_s", "chat_max_s"),
                                       ("app", "seconds", "ask_max_s")):
        data = out.get(path_name) or {}
        for label in ("baseline", "pdf_bomb", "styles_docx"):
            r = data.get(label)
            if not isinstance(r, dict):
                continue
            seconds, peak, pss = r[key_s], r["peak_rss_mb"], r["peak_pss_mb"]
            chat_s = r.get(chat_key) if chat_key else None
            fast = seconds < LIMIT_S and (chat_s is None or chat_s < CHAT_S)
            status = r.get("status_code", r.get("exit_code", "-"))
            rows.append([path_name, label, status, seconds, peak, pss, r["largest_process_peak_mb"],
                         "-" if chat_s is None else chat_s,
                         "pass" if fast and peak < LIMIT_MB else "FAIL", "pass" if fast and pss < LIMIT_MB else "FAIL",
                         (r.get("message") or "")[:110]])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdf-mb", type=int, default=256)
    ap.add_argument("--styles", type=int, default=20000)
    ap.add_argument("--paths", nargs="+", default=["A", "B", "C"], choices=["A", "B", "C"])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "hostile_uploads.json"))
    args = ap.parse_args()
    from ragtune.net import free_port

    out: dict = {"thresholds": {"seconds": LIMIT_S, "peak_rss_mb": LIMIT_MB, "chat_s": CHAT_S}}
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        files = {"baseline": tmp / BASELINE.name,
                 "pdf_bomb": pdf_bomb(tmp / "stream_bomb.pdf", args.pdf_mb),
                 "styles_docx": styled_docx(tmp / "many_styles.docx", args.styles)}
        shutil.copy(BASELINE, files["baseline"])
        out["files"] = {
            "baseline": {"name": BASELINE.name, "kb": round(BASELINE.stat().st_size / 1024, 1)},
            "pdf_bomb": {"name": files["pdf_bomb"].name, "kb": round(files["pdf_bomb"].stat().st_size / 1024, 1),
                         "inflated_mb": args.pdf_mb},
            "styles_docx": {"name": files["styles_docx"].name,
                            "kb": round(files["styles_docx"].stat().st_size / 1024, 1),
                            "paragraphs": 1000, "styles": args.styles},
            "built_s": round(time.perf_counter() - t0, 1)}
        print("files", out["files"], flush=True)
        runners = {"A": ("cli", lambda: path_cli(tmp, files)),
                   "B": ("http", lambda: path_http(tmp, files, free_port())),
                   "C": ("app", lambda: path_app(tmp, files, free_port()))}
        for name in args.paths:
            key, run = runners[name]
            try:
                out[key] = run()
            except Exception as exc:  # a path that cannot be measured says why
                out[key] = {"not_measured": f"{type(exc).__name__}: {exc}"[:3000]}
                print(name, "not measured:", out[key]["not_measured"], flush=True)
    out["table"] = verdicts(out)
    out["table_columns"] = ["path", "file", "code", "s", "peak RSS sum MB", "peak PSS sum MB",
                            "largest process MB", "chat s", "verdict (RSS sum)", "verdict (PSS sum)", "message"]
    head = ["path", "file", "code", "s", "RSS MB", "PSS MB", "1-proc MB", "chat s", "RSS ok", "PSS ok", "message"]
    print("\n" + " | ".join(head))
    for row in out["table"]:
        print(" | ".join(str(x) for x in row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
