"""Concurrent streaming clients against a deployed assistant, bounded in count and time.

Used by ``bench/deploy_load.py`` and the deploy tests. The streams are read with the ``openai``
client, as a program that uses the assistant reads them. A request counts as failed when the status
is not 200, the stream carries an error chunk, or it ends before its last chunk (the one with a
``finish_reason``).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np
import openai


@dataclass
class LoadResult:
    clients: int
    requests: int
    ok: int
    failed: int
    wall_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    requests_per_s: float
    completion_tokens: int
    e2e_tokens_per_s: float  # output tokens of all answers over the run's whole wall time (first token wait included)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> "LoadResult":
        """A stored result; rows written before the rename call the same figure ``tokens_per_s``."""
        row = dict(row)
        if "tokens_per_s" in row:
            row.setdefault("e2e_tokens_per_s", row.pop("tokens_per_s"))
        return cls(**row)


def _pct(values, q):
    if not values:
        return None
    return float(np.percentile(values, q))


class _StreamFailed(Exception):
    pass


def _client(base_url: str, path: str, key: str | None, timeout_s: float) -> openai.AsyncOpenAI:
    """An openai client for the chat completions at ``base_url + path``; its pool (1,000 connections) gives
    every stream a connection of its own, and a failure is not retried (it counts)."""
    suffix = "/chat/completions"
    if not path.endswith(suffix):
        raise ValueError(f"The load test streams chat completions: the path must end with {suffix} (got {path}).")
    return openai.AsyncOpenAI(base_url=base_url + path[:-len(suffix)], api_key=key or "none", max_retries=0,
                              timeout=timeout_s)


async def _chunks(client: openai.AsyncOpenAI, key: str | None, request: dict):
    """The chunks of one streamed chat completion (``ChatCompletionChunk``), as the openai client reads them.
    Raises ``_StreamFailed`` on an HTTP error, an error chunk, or a stream that ends before its last chunk.
    Use it under ``aclosing``: leaving the loop early must close the connection at once (that is how a
    client drops a stream). No key: no Authorization header at all (the server says it wants one)."""
    no_key = {} if key else {"extra_headers": {"Authorization": openai.omit}}
    finished = False
    try:
        stream = await client.chat.completions.create(model=openai.omit, stream=True, **request, **no_key)
        async with stream:
            async for chunk in stream:
                finished = finished or any(choice.finish_reason for choice in chunk.choices)
                yield chunk
    except openai.APIStatusError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        raise _StreamFailed(f"HTTP {exc.status_code}: {message or exc.message}"[:300]) from None
    except openai.APIConnectionError:
        raise
    except openai.APIError as exc:  # an error event inside the stream
        raise _StreamFailed(exc.message) from None
    except ValueError as exc:  # a chunk that is not JSON
        raise _StreamFailed(f"a chunk that is not JSON ({exc})") from None
    if not finished:
        raise _StreamFailed("the stream ended before its last chunk")


def _failure(exc: Exception) -> dict:
    if isinstance(exc, _StreamFailed):
        return {"ok": False, "error": str(exc)}
    cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ else exc
    return {"ok": False, "error": f"{type(cause).__name__}: {cause}"}


def _text(chunk) -> str | None:
    return chunk.choices[0].delta.content if chunk.choices else None


async def _one(client: openai.AsyncOpenAI, key: str | None, request: dict) -> dict:
    started = time.perf_counter()
    ttft = None
    tokens = 0
    try:
        async with aclosing(_chunks(client, key, request)) as chunks:
            async for chunk in chunks:
                if _text(chunk) and ttft is None:
                    ttft = time.perf_counter() - started
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
    except (_StreamFailed, openai.APIConnectionError) as exc:
        return _failure(exc)
    return {"ok": True, "latency": time.perf_counter() - started, "ttft": ttft, "tokens": tokens}


async def _run(base_url: str, key: str | None, clients: int, per_client: int, questions: list[str], max_tokens: int,
               timeout_s: float, path: str) -> LoadResult:
    results: list[dict] = []

    async with _client(base_url, path, key, timeout_s) as client:
        async def worker(i: int):
            for j in range(per_client):
                q = questions[(i * per_client + j) % len(questions)]
                request = {"messages": [{"role": "user", "content": q}], "max_tokens": max_tokens}
                results.append(await _one(client, key, request))

        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(clients))), timeout=timeout_s)
        except asyncio.TimeoutError:
            pass
        wall = time.perf_counter() - started
    expected = clients * per_client
    ok = [r for r in results if r["ok"]]
    errors = [r["error"] for r in results if not r["ok"]]
    if len(results) < expected:
        errors.append(f"{expected - len(results)} requests did not finish within {timeout_s:.0f} s")
    lat = [r["latency"] for r in ok]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in ok)
    return LoadResult(clients=clients, requests=expected, ok=len(ok), failed=expected - len(ok), wall_s=wall,
                      latency_p50_s=_pct(lat, 50), latency_p95_s=_pct(lat, 95), ttft_p50_s=_pct(ttft, 50),
                      ttft_p95_s=_pct(ttft, 95), requests_per_s=len(ok) / wall if wall else 0.0,
                      completion_tokens=tokens, e2e_tokens_per_s=tokens / wall if wall else 0.0, errors=errors[:20])


def run_load(base_url: str, key: str | None, *, clients: int = 32, per_client: int = 1,
             questions: list[str] | None = None, max_tokens: int = 32, timeout_s: float = 300,
             path: str = "/v1/chat/completions") -> LoadResult:
    """Run `clients` concurrent streaming clients, each sending `per_client` requests one after another."""
    questions = questions or ["What does the product do?", "How do I reset it?", "Who do I call for support?"]
    return asyncio.run(_run(base_url.rstrip("/"), key, clients, per_client, questions, max_tokens, timeout_s, path))


# ------------------------------------------------------------------ clients that go away

@dataclass
class DropResult:
    """`clients` concurrent streams of which `dropped` close mid-stream; the rest must all succeed."""
    clients: int
    dropped: int
    ok: int
    failed: int
    wall_s: float
    drop_to_cancelled_s: list[float]  # per dropped stream: its drop until the server counted it cancelled
    drop_to_in_flight_true_s: float | None  # the last drop until in-flight equals the live streams (or 0)
    in_flight_max_excess: float  # most in-flight seen above the streams still open after the drops settled
    in_flight_end: float | None
    cancelled_counted: float
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_metrics(text: str) -> tuple[float, float]:
    """(in-flight now, cancelled requests so far) summed over workspaces, from /metrics text."""
    in_flight = cancelled = 0.0
    for line in text.splitlines():
        if line.startswith("ragtune_deploy_in_flight{"):
            in_flight += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ragtune_deploy_requests_total{") and 'status="cancelled"' in line:
            cancelled += float(line.rsplit(" ", 1)[1])
    return in_flight, cancelled


class _Drops:
    """One drop run's shared state: the streams still open, the drops left to make and when each was made,
    and the samples of /metrics: (time, in-flight, cancelled since the start, streams open when read)."""

    def __init__(self, client: openai.AsyncOpenAI, probe: httpx.AsyncClient, key: str | None, request: dict,
                 drop: int, drop_after: int):
        self.client, self.probe, self.key, self.request = client, probe, key, request
        self.drops_left, self.drop_after = drop, drop_after
        self.live, self.drop_times, self.samples, self.results = 0, [], [], []
        self.cancelled_before = 0.0

    async def metrics_now(self) -> tuple[float, float]:
        r = await self.probe.get("/metrics")
        r.raise_for_status()
        in_flight, cancelled = parse_metrics(r.text)
        return in_flight, cancelled - self.cancelled_before

    async def stream(self) -> None:
        """One stream, dropped (its connection closed) after `drop_after` chunks of text while drops are left."""
        self.live += 1
        content, dropped = 0, False
        try:
            async with aclosing(_chunks(self.client, self.key, self.request)) as chunks:
                async for chunk in chunks:
                    content += bool(_text(chunk))
                    if content >= self.drop_after and self.drops_left > 0:
                        self.drops_left -= 1
                        self.live -= 1  # before the close: the server may count it at once
                        self.drop_times.append(time.perf_counter())
                        dropped = True
                        break  # leaving the block closes the connection
            outcome = {"dropped": True} if dropped else {"ok": True}
        except (_StreamFailed, openai.APIConnectionError) as exc:
            outcome = _failure(exc)
        if not dropped:
            self.live -= 1
        self.results.append(outcome)

    async def sample_forever(self) -> None:
        while True:
            live = self.live  # read first: streams only end after this, so in-flight can only fall
            in_flight, cancelled = await self.metrics_now()
            self.samples.append((time.perf_counter(), in_flight, cancelled, live))
            await asyncio.sleep(0.05)

    async def settle(self, within_s: float = 30) -> None:
        """Sample until in-flight is 0 and every drop is counted cancelled (the server may still be unwinding)."""
        deadline = time.perf_counter() + within_s
        while time.perf_counter() < deadline:
            in_flight, cancelled = await self.metrics_now()
            self.samples.append((time.perf_counter(), in_flight, cancelled, 0))
            if in_flight == 0 and cancelled >= len(self.drop_times):
                return
            await asyncio.sleep(0.05)

    def result(self, clients: int, started: float, wall: float, timeout_s: float) -> DropResult:
        samples, drop_times = sorted(self.samples), self.drop_times
        to_cancelled = []
        for i, t in enumerate(drop_times):
            seen = next((s[0] for s in samples if s[0] >= t and s[2] >= i + 1), None)
            to_cancelled.append(None if seen is None else seen - t)
        last_drop = drop_times[-1] if drop_times else started
        true_at = next((s[0] for s in samples if s[0] >= last_drop and s[1] <= s[3]), None)
        settled = max([t for t in to_cancelled if t is not None] or [0.0]) + last_drop
        excess = max([s[1] - s[3] for s in samples if s[0] > settled] or [0.0])
        ok = sum(1 for r in self.results if r.get("ok"))
        errors = [r["error"] for r in self.results if "error" in r]
        if len(self.results) < clients:
            errors.append(f"{clients - len(self.results)} streams did not finish within {timeout_s:.0f} s")
        return DropResult(clients=clients, dropped=len(drop_times), ok=ok, failed=clients - len(drop_times) - ok,
                          wall_s=wall, drop_to_cancelled_s=[t for t in to_cancelled if t is not None],
                          drop_to_in_flight_true_s=None if true_at is None else true_at - last_drop,
                          in_flight_max_excess=excess, in_flight_end=samples[-1][1] if samples else None,
                          cancelled_counted=samples[-1][2] if samples else 0.0, errors=errors[:20])


async def _run_drops(base_url: str, key: str | None, clients: int, drop: int, drop_after: int, max_tokens: int,
                     timeout_s: float, path: str, builder_auth: tuple | None, question: str) -> DropResult:
    request = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
               "temperature": 1.0, "seed": 7}  # sampled: the tiny models do not stop early
    async with _client(base_url, path, key, timeout_s) as client, \
            httpx.AsyncClient(base_url=base_url, timeout=10, auth=builder_auth) as probe:
        run = _Drops(client, probe, key, request, drop, drop_after)
        run.cancelled_before = (await run.metrics_now())[1]
        sampler = asyncio.ensure_future(run.sample_forever())
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(run.stream() for _ in range(clients))), timeout=timeout_s)
        except asyncio.TimeoutError:
            pass
        wall = time.perf_counter() - started
        await run.settle()
        sampler.cancel()
    return run.result(clients, started, wall, timeout_s)


def run_drops(base_url: str, key: str | None, *, clients: int = 64, drop: int = 3, drop_after: int = 3,
              max_tokens: int = 64, timeout_s: float = 300, path: str = "/v1/chat/completions",
              builder_auth: tuple | None = None, question: str = "Tell me everything about the product.") -> DropResult:
    """`clients` concurrent streams; the first `drop` to receive `drop_after` chunks of text close their
    connection. Watches /metrics (``builder_auth``: user and builder password, when one is set)."""
    return asyncio.run(_run_drops(base_url.rstrip("/"), key, clients, drop, drop_after, max_tokens, timeout_s,
                                  path, builder_auth, question))
