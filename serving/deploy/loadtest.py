"""Concurrent streaming clients against a deployed assistant, bounded in count and time.

Used by ``bench/deploy_load.py`` and the deploy tests. A request counts as failed when the
status is not 200, the stream carries an error chunk, or it ends without ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

import httpx


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
    tokens_per_s: float
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(values, q):
    if not values:
        return None
    import numpy as np

    return float(np.percentile(values, q))


async def _one(client: httpx.AsyncClient, url: str, headers: dict, body: dict) -> dict:
    started = time.perf_counter()
    ttft = None
    done = False
    tokens = 0
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                return {"ok": False, "error": f"HTTP {response.status_code}: {text}"}
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    continue
                chunk = json.loads(payload)
                if "error" in chunk:
                    return {"ok": False, "error": chunk["error"].get("message", "error chunk")}
                delta = (chunk.get("choices") or [{}])[0].get("delta", {})
                if delta.get("content") and ttft is None:
                    ttft = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"].get("completion_tokens", 0)
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not done:
        return {"ok": False, "error": "stream ended without [DONE]"}
    return {"ok": True, "latency": time.perf_counter() - started, "ttft": ttft, "tokens": tokens}


async def _run(base_url: str, key: str | None, clients: int, per_client: int, questions: list[str], max_tokens: int,
               timeout_s: float, path: str) -> LoadResult:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    results: list[dict] = []

    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        async def worker(i: int):
            for j in range(per_client):
                q = questions[(i * per_client + j) % len(questions)]
                body = {"messages": [{"role": "user", "content": q}], "max_tokens": max_tokens, "stream": True}
                results.append(await _one(client, path, headers, body))

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
                      completion_tokens=tokens, tokens_per_s=tokens / wall if wall else 0.0, errors=errors[:20])


def run_load(base_url: str, key: str | None, *, clients: int = 32, per_client: int = 1,
             questions: list[str] | None = None, max_tokens: int = 32, timeout_s: float = 300,
             path: str = "/v1/chat/completions") -> LoadResult:
    """Run `clients` concurrent streaming clients, each sending `per_client` requests one after another."""
    questions = questions or ["What does the product do?", "How do I reset it?", "Who do I call for support?"]
    return asyncio.run(_run(base_url.rstrip("/"), key, clients, per_client, questions, max_tokens, timeout_s, path))
