"""Defences shared by the deploy server and the Gradio builder app against other sites and guessers.

- ``HostGuard``: an ASGI middleware that answers only for the host names the server was started
  for (DNS rebinding sends ``Host: attacker.example``), and refuses state-changing requests from
  other sites: a browser marks them with ``Origin`` / ``Sec-Fetch-Site``, which a page cannot
  forge; where the routes are ours (the deploy server's /builder), they also need a custom header
  that a cross-site form cannot send and a cross-site script cannot send without a CORS preflight
  that this server never grants.
- ``LoginThrottle``: wrong builder passwords limited per address (a few, then doubling waits) and in
  total across addresses (a token bucket), with addresses that logged in before exempt from the total.
- ``SessionSigner``: the chat page's session cookie, signed and timed with itsdangerous.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer

from serving.openai_protocol import ErrorCode

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
ALLOWED_HOSTS_ENV = "RAGTUNE_ALLOWED_HOSTS"
BUILDER_HEADER = "x-ragtune-builder"  # value "1"; sent by ragtune's own builder clients
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME_SITE_FETCH = frozenset({"same-origin", "none"})  # "none": typed in the address bar, a bookmark


def allowed_hosts(bind_host: str = "127.0.0.1", extra: Iterable[str] | None = None) -> set[str]:
    """Host names a server bound to `bind_host` answers for: loopback names, the bound address, the
    names in $RAGTUNE_ALLOWED_HOSTS (comma-separated; ``*`` allows any) and `extra`."""
    hosts = {*LOCAL_NAMES, bind_host.strip("[]").lower()}
    if bind_host in ("0.0.0.0", "::", ""):  # every interface: the machine's own names and addresses too
        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            hosts |= set(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
    configured = os.environ.get(ALLOWED_HOSTS_ENV, "")
    hosts |= {h.strip().lower() for h in [*configured.split(","), *(extra or [])] if h and h.strip()}
    return {h for h in hosts if h}


def host_name(value: str) -> str:
    """The host name of a Host header or an Origin ("[::1]:8000" -> "::1")."""
    value = (value or "").strip().lower()
    if "://" in value:
        return (urlsplit(value).hostname or "").lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class SameSiteRule:
    """What a state-changing request must show to prove it comes from this site: no other site named in
    ``Origin`` / ``Sec-Fetch-Site``, and (where the routes are only ever called by ragtune's own clients)
    `header` set to "1", which a cross-site form cannot send."""
    header: str | None = None


SAME_SITE = SameSiteRule()


class HostGuard:
    """ASGI middleware: known hosts only; for unsafe methods, the same-site rule of the path (if it has one).

    ``hosts`` is a set the owner may extend after start (the deploy server adds the address it bound).
    ``rule_for(path)`` gives the path's ``SameSiteRule`` or None (default: ``SAME_SITE`` everywhere).
    ``refuse(status, message, code)`` builds the error response.
    """

    def __init__(self, app, hosts: set[str], refuse: Callable,
                 rule_for: Callable[[str], SameSiteRule | None] = lambda _path: SAME_SITE):
        self.app, self.hosts, self.refuse, self.rule_for = app, hosts, refuse, rule_for

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self.problem(scope, headers)
        if problem is None:
            return await self.app(scope, receive, send)
        status, message, code = problem
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        return await self.refuse(status, message, code)(scope, receive, send)

    def problem(self, scope, headers: dict) -> tuple[int, str, ErrorCode] | None:
        host = host_name(headers.get("host", ""))
        if "*" not in self.hosts and host not in self.hosts:
            return 421, (f"This server does not answer for the host '{host or '(none)'}'; add it to "
                         f"{ALLOWED_HOSTS_ENV} if it is yours."), ErrorCode.UNKNOWN_HOST
        if scope["type"] == "http" and scope.get("method", "") not in UNSAFE_METHODS:
            return None
        rule = self.rule_for(scope.get("path", ""))
        if rule is None:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site.lower() not in SAME_SITE_FETCH:
            return (403, f"Refused: this request came from another site (Sec-Fetch-Site: {site}).",
                    ErrorCode.CROSS_SITE_REQUEST)
        origin = headers.get("origin")
        if origin is not None and not self._same_origin(origin, headers.get("host", "")):
            return (403, "Refused: this request came from another site (Origin does not match).",
                    ErrorCode.CROSS_SITE_REQUEST)
        if rule.header and scope["type"] == "http" and headers.get(rule.header) != "1":
            return 403, (f"Builder requests must carry the header '{rule.header}: 1' (a web page of "
                         "another site cannot send it)."), ErrorCode.CROSS_SITE_REQUEST
        return None

    @staticmethod
    def _same_origin(origin: str, host_header: str) -> bool:
        """The page's origin is this very host and port (the host itself was checked already)."""
        return origin != "null" and urlsplit(origin).netloc.lower() == host_header.strip().lower()


class LoginThrottle:
    """Wrong guesses of one secret (the builder password), limited per address and in total.

    The rule, in the order it is applied to a request that carries a password:

    1. **Per address.** After `free` wrong passwords from one address, each further attempt from it
       waits 1, 2, 4 ... s (at most `max_wait_s`); while it waits, even the right password is not
       checked (429 with Retry-After). A success from that address clears its count.
    2. **In total.** Every wrong password, from any address, takes a token from one bucket that holds
       `global_per_min` tokens and refills at `global_per_min` a minute. While it is empty, a
       password from an address that has not logged in successfully is not checked (429 until the
       next token), so guessers spread over many addresses get `global_per_min` guesses a minute in
       all, however many addresses they have.
    3. **The owner first.** An address that has given the right password within `remember_s` is not
       held back by the total bucket (only by its own failures, rule 1): someone else's wrong guesses
       cannot lock the owner out of the machine they use.

    A request without a password is not a guess: callers answer it 401 without calling `failed`.
    """

    def __init__(self, free: int = 5, max_wait_s: float = 300.0, global_per_min: float = 10.0,
                 remember_s: float = 30 * 86400.0, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000):
        self.free, self.max_wait_s, self.clock = free, max_wait_s, clock
        self.global_per_min, self.remember_s, self.max_clients = float(global_per_min), remember_s, max_clients
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}  # client -> (failures, not before)
        self._good: dict[str, float] = {}  # client -> when it last gave the right password
        self._tokens, self._refilled = self.global_per_min, clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.global_per_min, self._tokens + (now - self._refilled) * self.global_per_min / 60.0)
        self._refilled = now

    def _known(self, client: str, now: float) -> bool:
        since = self._good.get(client)
        return since is not None and now - since <= self.remember_s

    def wait_s(self, client: str) -> float:
        """Seconds before a password from `client` may be checked (0: now)."""
        with self._lock:
            now = self.clock()
            wait = max(0.0, self._state.get(client, (0, 0.0))[1] - now)
            if wait > 0 or self._known(client, now) or self.global_per_min <= 0:
                return wait
            self._refill(now)
            return 0.0 if self._tokens >= 1 else (1 - self._tokens) * 60.0 / self.global_per_min

    def failed(self, client: str) -> float:
        """Count a wrong password from `client`; returns how long that address must now wait."""
        with self._lock:
            now = self.clock()
            failures = self._state.pop(client, (0, 0.0))[0] + 1
            wait = 0.0 if failures < self.free else min(self.max_wait_s, 2.0 ** (failures - self.free))
            self._state[client] = (failures, now + wait)
            while len(self._state) > self.max_clients:  # bounded memory under a spray of addresses
                self._state.pop(next(iter(self._state)))
            if self.global_per_min > 0:
                self._refill(now)
                self._tokens = max(0.0, self._tokens - 1)
        return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._state.pop(client, None)
            self._good.pop(client, None)
            self._good[client] = self.clock()
            while len(self._good) > self.max_clients:
                self._good.pop(next(iter(self._good)))


class SessionSigner:
    """Signed, timed tokens for the chat page's cookie (a fresh secret per server run)."""

    def __init__(self, secret: bytes, ttl_s: int):
        self._serializer = URLSafeTimedSerializer(secret, salt="ragtune-page-session",
                                                  serializer=_CompactJSON)
        self.ttl_s = ttl_s

    def sign(self, payload: dict) -> str:
        return self._serializer.dumps(payload)

    def unsign(self, token: str) -> dict | None:
        try:
            payload = self._serializer.loads(token or "", max_age=self.ttl_s)
        except BadSignature:  # also SignatureExpired
            return None
        return payload if isinstance(payload, dict) else None


class _CompactJSON:
    @staticmethod
    def dumps(obj) -> str:
        return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def loads(data):
        return json.loads(data)
