"""Fixtures for the retrieval tests: the embedder's tokenizer and indexed workspaces built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def counter():
    from ragtune.models import resolve_embedder
    from retrieval.chunking import TokenCounter

    return TokenCounter(resolve_embedder().path)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, sample_docs):
    """A workspace holding the sample documents, indexed (read-only for tests: copy before changing)."""
    from ragtune.workspace import Workspace
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths

    ws = Workspace.create("sample", root=tmp_path_factory.mktemp("sample-ws"))
    results = ingest_paths(ws, [sample_docs])
    assert all(r.status == "added" for r in results), results
    build_index(ws, progress=False)
    return ws
