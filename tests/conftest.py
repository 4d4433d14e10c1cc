"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

# Set before anything imports transformers, torch or gradio.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_CORPORA = REPO.parent / "shared" / "corpora"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # One thread is steadier than two on the 2-core CI machines.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets its own RAGTUNE_HOME; the model cache (RAGTUNE_CACHE) stays shared."""
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "ragtune-home"))
    monkeypatch.delenv("RAGTUNE_WORKSPACES", raising=False)
    monkeypatch.delenv("RAGTUNE_WORKSPACE", raising=False)


@pytest.fixture
def workspace(tmp_path):
    from ragtune.workspace import Workspace

    return Workspace.create("test", root=tmp_path / "workspaces")


@pytest.fixture(scope="session")
def tiny_llm() -> Path:
    from ragtune.models import resolve_llm

    return resolve_llm("tiny-llama").path


@pytest.fixture(scope="session")
def gemma_llm() -> Path:
    from ragtune.models import resolve_llm

    return resolve_llm("gemma-3-270m", progress=False).path


@pytest.fixture(scope="session")
def sample_docs() -> Path:
    return REPO / "datasets" / "sample"


@pytest.fixture(scope="session")
def sample_qa() -> Path:
    return REPO / "datasets" / "sample_qa.jsonl"


@pytest.fixture(scope="session")
def shared_corpora() -> Path:
    assert SHARED_CORPORA.is_dir(), f"shared corpora missing at {SHARED_CORPORA}"
    return SHARED_CORPORA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def serve_asgi():
    """start(app) serves an ASGI app with uvicorn on a free loopback port in this process and
    returns its base URL; every server started is stopped when the test ends."""
    from serving.deploy.server import DeployServer

    started = []

    def start(app) -> str:
        server = DeployServer(app).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


# ------------------------------------------------------------------ hostile files (ingest gate tests)

_BOMB_TYPES = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
               '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
               '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
               '<Default Extension="xml" ContentType="application/xml"/>'
               '<Override PartName="/word/document.xml" '
               'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
_BOMB_RELS = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
              '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
              '<Relationship Id="rId1" Target="word/document.xml" '
              'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/></Relationships>')


def write_zip_bomb(path: Path, inflated_mb: int = 40, member: str = "word/document.xml") -> Path:
    """A zip-based document (a real DOCX package) whose one part inflates to `inflated_mb` MB of zeros.

    About 1000x smaller on disk. Today's main reads the whole part before its XML parser fails: a
    400 MB one cost 23 s and 0.8 GB there.
    """
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _BOMB_TYPES)
        z.writestr("_rels/.rels", _BOMB_RELS)
        with z.open(member, "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w='
                    b'"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>')
            block = b"\0" * (1 << 20)
            for _ in range(inflated_mb):
                f.write(block)
            f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return path


class RssWatch:
    """Peak resident memory of a process above its level at start, sampled every few milliseconds."""

    def __init__(self, pid: int | None = None, every_s: float = 0.005):
        self.pid, self.every_s = pid or os.getpid(), every_s
        self.start_mb = self.peak_mb = self.elapsed_s = 0.0

    def _rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def __enter__(self) -> "RssWatch":
        import threading
        import time

        self.start_mb = self.peak_mb = self._rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                try:
                    self.peak_mb = max(self.peak_mb, self._rss_mb())
                except (OSError, StopIteration):
                    return
                self._stop.wait(self.every_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import time

        self.elapsed_s = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())

    @property
    def extra_mb(self) -> float:
        return self.peak_mb - self.start_mb


@pytest.fixture
def zip_bomb(tmp_path):
    """zip_bomb(name="bomb.docx", inflated_mb=40, member=...) -> path of a fresh archive bomb."""
    return lambda name="bomb.docx", **kw: write_zip_bomb(tmp_path / name, **kw)


@pytest.fixture(scope="session")
def docx_bomb(tmp_path_factory) -> Path:
    """report.docx: about 400 KB on disk, 400 MB once inflated (the size of the review's app finding)."""
    return write_zip_bomb(tmp_path_factory.mktemp("bomb") / "report.docx", inflated_mb=400)


@pytest.fixture
def rss_watch():
    """rss_watch(pid=None) -> a context manager measuring elapsed_s and extra_mb of peak RSS."""
    return RssWatch
