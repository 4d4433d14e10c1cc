"""Defences of the deploy server and the Gradio builder app against guessers (the host and same-site guard
is ``serving.host_guard``).

- ``LoginThrottle``: wrong builder passwords limited per address (a few, then doubling waits) and in
  total across addresses (a token bucket), with addresses that logged in before exempt from the total.
- ``SessionSigner``: the chat page's session cookie, signed and timed with itsdangerous.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

from itsdangerous import BadSignature, URLSafeTimedSerializer

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
