"""What an Assistant asks of document search, declared beside ``Engine`` (what it asks of a model).

serving never imports retrieval. ``retrieval.search.Retriever`` is a ``Retriever`` and
``retrieval.prompt.build_rag_messages`` is a ``PromptBuilder`` by their shape alone; the composition
root (``app/wiring/assistants.py``) and the evaluation process hand them to ``serving.variants.Assistant``.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}, as in serving.engine


class Passage(Protocol):
    """One retrieved passage, as the Assistant cites it (read-only: the Assistant never changes one)."""

    @property
    def text(self) -> str: ...

    @property
    def doc(self) -> str: ...  # the document's name, "file.pdf"

    @property
    def page(self) -> int | None: ...

    @property
    def section(self) -> str | None: ...

    @property
    def score(self) -> float: ...  # the retriever's, higher is better

    @property
    def chunk_id(self) -> str: ...

    @property
    def citation(self) -> str: ...  # "file.pdf#page=3"


class WorkedExample(Protocol):
    """One question answered from the user's own corpus, shown to the model before the real question."""

    def messages(self) -> list[Message]: ...


@runtime_checkable
class Retriever(Protocol):
    """A workspace's document search: the passages for a question, best first."""

    version: str  # the index's version; an answer cached against another version is stale
    answer_k: int | None  # passages per answer chosen when the index was built; None: the workspace setting

    def retrieve(self, query: str, k: int | None = None) -> Sequence[Passage]: ...

    def worked_example(self, passages: Sequence[Passage]) -> WorkedExample | None:
        """A worked example from a document none of ``passages`` comes from; None when the corpus has none."""


class PromptBuilder(Protocol):
    """The chat messages of a RAG question: ``(messages, passages used, in citation order)``.

    Passages are numbered [1], [2], ... in the order used; they are taken while they fit in
    ``max_context_tokens`` as ``count_tokens`` counts them. ``style="plain"`` is for a base model
    prompted as plain text (``serving.plain_prompt``).
    """

    def __call__(self, question: str, passages: Sequence[Passage], *, count_tokens: Callable[[str], int],
                 max_context_tokens: int, system: str | None = None, history: list[Message] | None = None,
                 example: WorkedExample | None = None, style: str = "chat") -> tuple[list[Message], list]: ...


# Called for each question, so a rebuilt index is used at once (``Retriever.for_workspace`` caches per
# index version, so a lookup costs one small file read); raises when the workspace has no index.
OpenRetriever = Callable[[], Retriever]
