"""Wire an Assistant to this workspace's retriever: the one place serving meets retrieval.

serving and retrieval never import each other; the CLI, the UI, the deploy server and the
evaluation runner all build their assistants here (evaluation is the lowest layer that sees both).
"""

from __future__ import annotations

from serving.variants import Assistant


def make_assistant(ws, engine) -> Assistant:
    """An Assistant for `ws` on `engine`; the index loads on the first rag question, not before."""
    try:
        from retrieval.prompt import build_rag_messages
    except ImportError:  # retrieval not installed: base and ft still work, rag says why it cannot
        build_rag_messages = None
    return Assistant(ws, engine, prompt_builder=build_rag_messages, retriever_factory=lambda: FreshRetriever(ws))


class FreshRetriever:
    """The workspace's retriever, looked up per question so a rebuilt index is used at once.

    ``Retriever.for_workspace`` caches per index version, so this costs one small file read.
    """

    def __init__(self, ws):
        from retrieval.search import Retriever

        self.ws = ws
        self._open = Retriever.for_workspace
        self._open(ws)  # fails now, with a clear message, when the workspace has no index

    def retrieve(self, query: str, k: int | None = None, **kwargs):
        return self._open(self.ws).retrieve(query, k=k, **kwargs)

    def worked_example(self, passages):
        return self._open(self.ws).worked_example(passages)

    @property
    def answer_k(self) -> int | None:
        return self._open(self.ws).answer_k

    @property
    def version(self) -> str:
        return self._open(self.ws).version
