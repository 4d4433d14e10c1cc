"""One engine per (kind, model, url) in a process, shared by everything that asks for it.

Loading a model or starting a vLLM server takes seconds to a minute, so the CLI, the UI, the
evaluation runner and the API server all get the same engine object. Servers ragtune started are
stopped when the process exits.
"""

from __future__ import annotations

import atexit
import threading

from ragtune.errors import BadInputError
from ragtune.models import DEFAULT_LLM, canonical_name

ENGINE_KINDS = ("embedded", "vllm")
_engines: dict[tuple, object] = {}
_lock = threading.Lock()


def get_engine(kind: str = "embedded", model: str = DEFAULT_LLM, url: str | None = None, **options):
    """Return the shared engine, creating it on first use.

    ``options`` go to the engine's constructor the first time: for ``embedded`` ``dtype``,
    ``max_model_len``; for ``vllm`` the ``VLLMServer`` settings (``max_model_len``, ``port``,
    ``extra_args`` such as ``["--tensor-parallel-size", "2"]``, ...). With ``url`` the vLLM engine
    uses a server that is already running there instead of starting one.
    """
    if kind not in ENGINE_KINDS:
        raise BadInputError(f"Unknown engine '{kind}': use one of {', '.join(ENGINE_KINDS)}.")
    if url and kind != "vllm":
        raise BadInputError("--url names a vLLM server: use it with --engine vllm.")
    key = (kind, canonical_name(model) if not url else None, url.rstrip("/") if url else None)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create(kind, model, url, options)
            _engines[key] = engine
        return engine


def _create(kind: str, model: str, url: str | None, options: dict):
    if kind == "embedded":
        from .embedded import EmbeddedEngine

        return EmbeddedEngine(model, **options)
    from .vllm_engine import VLLMEngine, VLLMServer

    engine_keys = {"request_timeout"}
    if url:  # a running server's settings are its own; only client options apply
        return VLLMEngine(url, **{k: v for k, v in options.items() if k in engine_keys})
    server = VLLMServer(model, **{k: v for k, v in options.items() if k not in engine_keys})
    server.start()
    try:
        return VLLMEngine(server, **{k: v for k, v in options.items() if k in engine_keys})
    except BaseException:  # an engine that could not start leaves no server behind
        server.stop()
        raise


def close_engine(engine) -> None:
    with _lock:
        for key, value in list(_engines.items()):
            if value is engine:
                del _engines[key]
    engine.close()


@atexit.register
def close_all() -> None:
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        try:
            engine.close()
        except Exception:  # exiting anyway; a failed close must not hide the real exit status
            pass
