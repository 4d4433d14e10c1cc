"""What one deploy server holds: its workspaces, engine, limits, metrics and secrets (``app.state.deploy``)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ragtune.errors import WorkspaceError
from ragtune.workspace import META_FILE, NAME_RE, Workspace, list_workspaces
from serving.openai_errors import ApiError
from serving.openai_protocol import ErrorCode
from serving.variants import Assistant

from . import keys, metrics, upload_safety
from .ratelimit import RateLimiter
from .security import LoginThrottle, SessionSigner

SESSION_TTL_S = 12 * 3600


@dataclass
class DeployLimits:
    """Bounds on what one request may ask of the model (prompt and output length, body size)."""
    max_body_kb: int = 256
    max_messages: int = 40
    max_message_chars: int = 4000
    max_prompt_chars: int = 16000
    max_tokens: int = 512          # a request asking for more is capped here
    default_max_tokens: int = 256
    page_rate_per_min: int = 20    # per browser session
    page_workspace_rate_per_min: int = 240  # all sessions of one workspace's page together
    feedback_rate_per_min: int = 60


class Workspaces:
    """The workspaces one server answers for: a single one, or every workspace under a root folder."""

    def __init__(self, target):
        self._lock = threading.Lock()
        self._open: dict[str, Workspace] = {}
        self._key_owner: dict[str, str] = {}
        if isinstance(target, Workspace):
            self.single: Workspace | None = target
            self.root = None
            self._open[target.name] = target
        else:
            self.single = None
            self.root = Path(target)

    def get(self, name: str) -> Workspace:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(404, "No such assistant.", ErrorCode.NOT_FOUND)
        with self._lock:
            ws = self._open.get(name)
            if ws is not None and not (ws.root / META_FILE).exists():  # deleted or renamed since
                del self._open[name]
                ws = None
        if ws is not None:
            return ws
        if self.single is not None:
            raise ApiError(404, "No such assistant.", ErrorCode.NOT_FOUND)
        try:
            ws = Workspace.open(name, root=self.root)
        except WorkspaceError:
            raise ApiError(404, "No such assistant.", ErrorCode.NOT_FOUND) from None
        if ws.root.parent != self.root.resolve():
            raise ApiError(404, "No such assistant.", ErrorCode.NOT_FOUND)
        with self._lock:
            self._open[name] = ws
        return ws

    def owner_of(self, key_id: str) -> Workspace | None:
        """The workspace holding key `key_id` (ids are random, so at most one does)."""
        if self.single is not None:
            return self.single
        with self._lock:
            known = self._key_owner.get(key_id)
        if known:
            return self.get(known)
        for name in list_workspaces(self.root):
            ws = self.get(name)
            if any(k.key_id == key_id for k in keys.list_keys(ws)):
                with self._lock:
                    self._key_owner[key_id] = name
                return ws
        return None


@dataclass
class DeployState:
    spaces: Workspaces
    engine: object
    limits: DeployLimits
    upload_limits: upload_safety.UploadLimits
    password: str | None
    hosts: set[str]
    assistant_factory: Callable | None = None
    start_ingest: Callable | None = None        # start_ingest(ws, staged, paths, limits, index) -> ragtune.jobs.Job
    limiter: RateLimiter = field(default_factory=RateLimiter)
    metrics: metrics.DeployMetrics = field(default_factory=metrics.DeployMetrics)
    signer: SessionSigner = field(default_factory=lambda: SessionSigner(secrets.token_bytes(32), SESSION_TTL_S))
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _assistants: dict = field(default_factory=dict)
    _assistants_lock: threading.Lock = field(default_factory=threading.Lock)

    def assistant_for(self, ws):
        with self._assistants_lock:
            if ws.name not in self._assistants:
                if self.assistant_factory is not None:
                    self._assistants[ws.name] = self.assistant_factory(ws, self.engine)
                else:
                    self._assistants[ws.name] = Assistant(ws, self.engine)
            return self._assistants[ws.name]
