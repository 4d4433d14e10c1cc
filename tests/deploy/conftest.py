"""Fixtures for the deploy tests: one tiny embedded engine per session, apps over real workspaces."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_engine(tiny_llm):
    from serving.embedded import EmbeddedEngine

    engine = EmbeddedEngine("tiny-llama")
    yield engine
    engine.close()


@pytest.fixture
def published(workspace):
    """A workspace whose 'base' variant is live (needs no index and no adapter)."""
    from serving.deploy import deployments

    deployments.publish(workspace, "base", note="test")
    return workspace


def chat_body(question: str = "What does the K7 robot carry?", **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 8, **extra}


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


PAGE = {"X-Ragtune-Page": "1"}
