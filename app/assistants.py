"""Wire an Assistant to this workspace's retriever: the one place serving meets retrieval.

serving and retrieval never import each other; the app (CLI, UI) builds assistants here, and
evaluation wires its own the same way.
"""

from __future__ import annotations

import os

from serving.variants import Assistant


def make_assistant(ws, engine) -> Assistant:
    """An Assistant for `ws` on `engine`; the index loads on the first rag question, not before."""
    try:
        from retrieval.prompt import build_rag_messages
    except ImportError:  # retrieval not installed: base and ft still work, rag says why it cannot
        build_rag_messages = None
    return Assistant(ws, engine, prompt_builder=build_rag_messages, retriever_factory=lambda: FreshRetriever(ws))


class FreshRetriever:
    """The workspace's retriever, reloaded when the index folder is rebuilt (long-running servers)."""

    def __init__(self, ws):
        from retrieval.search import Retriever

        self.ws = ws
        self._open = Retriever.for_workspace
        self._signature = self._index_signature()
        self._retriever = self._open(ws)  # raises a clear BadInputError when no index exists

    def _index_signature(self):
        try:
            st = os.stat(self.ws.path("index"))
            return st.st_ino, st.st_mtime_ns
        except OSError:
            return None

    def retrieve(self, query: str, k: int = 5, **kwargs):
        signature = self._index_signature()
        if signature != self._signature:
            self._retriever, self._signature = self._open(self.ws), signature
        return self._retriever.retrieve(query, k=k, **kwargs)

    @property
    def version(self) -> str:
        return self._retriever.version
