"""The composition root of the end-user server: the deploy app on the shared engine, with its parts wired in.

`ragtune deploy`, the app's Deploy tab and ``bench/deploy_load.py`` all serve this one app: its
assistants come from ``app.wiring.assistants.build_assistant`` (so rag answers search the workspace's
index) and its builder upload route runs the ingest job of ``app.wiring.OPERATIONS``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from app.wiring import deploy_uploads
from app.wiring.assistants import build_assistant
from ragtune.workspace import Workspace
from serving.deploy.server import DeployLimits, DeployServer, build_deploy_app
from serving.engine import Engine


def deploy_app(target: Workspace | Path, engine: Engine, *, limits: DeployLimits | None = None) -> FastAPI:
    """The deploy app of one workspace (a Workspace) or of every workspace under a folder, on `engine`."""
    return build_deploy_app(target, engine, limits=limits, assistant_factory=build_assistant,
                            start_ingest=deploy_uploads())


def deploy_server(target: Workspace | Path, engine: Engine, *, host: str = "127.0.0.1", port: int = 0,
                  limits: DeployLimits | None = None, fallback: bool = False,
                  log_level: str = "warning") -> DeployServer:
    """The deploy app in a ``DeployServer``, not started yet (port 0: a free one; ``fallback``: a free one
    when `port` is taken)."""
    return DeployServer(deploy_app(target, engine, limits=limits), host=host, port=port, log_level=log_level,
                        fallback=fallback)
