"""What every tab shares: the app context (model, engine, retrievers), the error boundary, small helpers.

The engine loads in a background thread so the page is usable at once; handlers that need it wait.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from app.wiring.assistants import EngineSpec, build_assistant, build_engine
from ragtune.adapters import list_adapters
from ragtune.errors import BadInputError, RagtuneError, ServerUnavailableError, WorkspaceError
from ragtune.workspace import Workspace, list_workspaces
from retrieval.index import index_dir
from retrieval.search import Retriever, forget_workspace

log = logging.getLogger("ragtune.app")

VARIANTS = ["rag", "base", "ft", "ft+rag"]
VARIANT_LABELS = {
    "base": "Base model alone",
    "rag": "Base model + document search (RAG)",
    "ft": "Fine-tuned model",
    "ft+rag": "Fine-tuned model + document search",
}


def user_message(exc: BaseException) -> str:
    """A one-line sentence for the browser: never a stack trace."""
    if isinstance(exc, RagtuneError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return f"This feature is not installed yet (missing module '{exc.name}')."
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"The model server cannot be reached ({exc}). Check that it is running."
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"Something went wrong ({type(exc).__name__}{': ' + text[:300] if text else ''}). Details are in the terminal."


def _raise_friendly(exc: BaseException):
    if isinstance(exc, gr.Error):
        raise exc
    if not isinstance(exc, RagtuneError):
        log.exception("handler failed")
    raise gr.Error(user_message(exc), print_exception=False) from None


def guarded(fn=None, *, soft_outputs: int | None = None):
    """Error boundary for event handlers: any failure becomes a plain message in a toast.

    With ``soft_outputs=N`` a user error (RagtuneError) is a warning toast and the N outputs stay
    as they were, instead of Gradio's red "Error" badge over them (used where the outputs include
    the workspace selector in the header).
    """
    if fn is None:
        return functools.partial(guarded, soft_outputs=soft_outputs)

    def handle(exc):
        if soft_outputs is not None and isinstance(exc, RagtuneError):
            gr.Warning(str(exc))
            return tuple(gr.skip() for _ in range(soft_outputs))
        _raise_friendly(exc)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - this IS the boundary
                yield handle(exc)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            return handle(exc)
    return wrapper


def open_ws(name: str | None) -> Workspace:
    if not name:
        raise WorkspaceError("No workspace is open: create or open one on the Workspaces tab.")
    return Workspace.open(name)


def workspace_choices() -> list[str]:
    return list_workspaces()


def esc(text) -> str:
    return html.escape(str(text if text is not None else ""))


def fmt_seconds(s) -> str:
    if s is None:
        return "-"
    s = int(max(0, float(s)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def adapter_names(ws: Workspace) -> list[str]:
    return [a.name for a in list_adapters(ws)]


def citations_html(citations: list[dict], elem_prefix: str = "src") -> str:
    """Sources as clickable items that open to show the passage text."""
    if not citations:
        return "<div class='rt-sources rt-muted'>No sources for this answer.</div>"
    items = []
    for c in citations:
        label = c.get("citation") or c.get("doc") or "source"
        section = f" - {esc(c['section'])}" if c.get("section") else ""
        items.append(
            f"<details class='rt-source' id='{elem_prefix}-{esc(c.get('n'))}'>"
            f"<summary>[{esc(c.get('n'))}] {esc(label)}{section}</summary>"
            f"<div class='rt-passage'>{esc(c.get('text', ''))}</div></details>"
        )
    return "<div class='rt-sources'><b>Sources</b>" + "".join(items) + "</div>"


@dataclass
class AppContext:
    """Process-wide state of the running app: which model, the engine once loaded, cached retrievers."""

    model: str
    engine_kind: str = "embedded"
    engine_url: str | None = None
    default_workspace: str | None = None
    _engine: object = None
    _engine_error: str | None = None
    _engine_ready: threading.Event = field(default_factory=threading.Event)
    _loading_started: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ engine
    def start_loading(self) -> None:
        """Load the model in the background; the UI is usable meanwhile."""
        with self._lock:
            if self._loading_started is not None:
                return
            self._loading_started = time.time()
        threading.Thread(target=self._load, name="ragtune-engine-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            engine = build_engine(EngineSpec(kind=self.engine_kind, model=self.model, url=self.engine_url))
            engine.count_tokens("warm up")
            self._engine = engine
        except Exception as exc:  # noqa: BLE001 - reported in the header and on use
            log.exception("loading the model failed")
            self._engine_error = user_message(exc)
        finally:
            self._engine_ready.set()

    def engine(self, timeout: float = 900):
        self.start_loading()
        if not self._engine_ready.wait(timeout):
            raise ServerUnavailableError(f"The model {self.model} is still loading; try again in a minute.")
        if self._engine is None:
            raise ServerUnavailableError(f"The model {self.model} could not be loaded: {self._engine_error}")
        return self._engine

    @property
    def engine_loaded(self) -> bool:
        return self._engine_ready.is_set() and self._engine is not None

    def engine_status(self) -> str:
        if not self._engine_ready.is_set():
            waited = time.time() - (self._loading_started or time.time())
            return f"Model **{self.model}**: loading ({waited:.0f} s)..."
        if self._engine is None:
            return f"Model **{self.model}**: failed to load - {self._engine_error}"
        return f"Model **{self.model}**: ready"

    # ------------------------------------------------------------ retrieval
    def retriever(self, ws: Workspace, required: bool = True):
        """The workspace's retriever from the library's cache (reopened when the index is rebuilt)."""
        try:
            return Retriever.for_workspace(ws)
        except BadInputError:
            if required:
                raise
            return None

    def forget_retriever(self, ws: Workspace) -> None:
        forget_workspace(ws)

    def assistant(self, ws: Workspace, variants=None):
        """The one assistant factory on the shared engine; the index opens only for variants that search."""
        return build_assistant(ws, self.engine())


def index_manifest_path(ws) -> Path:
    return index_dir(ws) / "manifest.json"
