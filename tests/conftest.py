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
    import socket
    import threading
    import time

    import uvicorn

    started = []

    def start(app) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline, "the test server did not start within 30 s"
            time.sleep(0.1)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(30)
