"""Which requests an OpenAI server of ragtune answers at all: its own host names, and same-site writes.

``HostGuard`` is an ASGI middleware that answers only for the host names the server was started for
(DNS rebinding sends ``Host: attacker.example``), and refuses state-changing requests from other sites:
a browser marks them with ``Origin`` / ``Sec-Fetch-Site``, which a page cannot forge; where the routes
are only ever called by ragtune's own clients (the deploy server's /builder), they also need a custom
header that a cross-site form cannot send and a cross-site script cannot send without a CORS preflight
that the server never grants. The app factory (``serving.openai_server``) sets the rule per route from
its caller policy; the Gradio builder app uses it too (``deploy.server.builder_app_middleware``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from .openai_protocol import ErrorCode

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
