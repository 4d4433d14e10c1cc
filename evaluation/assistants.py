"""The assistant an evaluation runs when its caller hands it none (its own job process, the CLI's `eval`).

The same wiring as the app's composition root (``app/wiring/assistants.py``, which the chat tab, `ragtune
ask` and the deploy app use): serving's Assistant on the workspace's own index and prompt builder. It is
written here too because evaluation sits below the app and may not import it.
"""

from __future__ import annotations

from functools import partial

from retrieval.prompt import build_rag_messages
from retrieval.search import Retriever
from serving.engine import Engine
from serving.variants import Assistant


def make_assistant(ws, engine: Engine) -> Assistant:
    """An Assistant for `ws` on `engine`; the index is looked up per rag question (base and ft need none)."""
    return Assistant(ws, engine, prompt_builder=build_rag_messages,
                     open_retriever=partial(Retriever.for_workspace, ws))
