"""`ragtune serve`'s app answers only for its own host names (DNS rebinding), refuses a body over its cap
before reading it whole, and answers bad bodies with OpenAI-shaped 400s: the deploy server's own guard,
body reader and error handlers, applied to it."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from serving.openai_api import build_app

MB = 1 << 20
HI = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    return r.json()["error"]


@pytest.fixture
def app(workspace, tiny_engine):
    return build_app(workspace, tiny_engine)


def test_a_foreign_host_is_refused_before_any_route(app):
    with TestClient(app, base_url="http://evil.example:8000") as client:
        for r in (client.get("/v1/models"), client.post("/v1/chat/completions", json=HI), client.get("/health")):
            err = assert_openai_error(r, 421)
            assert err["code"] == "unknown_host" and "'evil.example'" in err["message"]
    with TestClient(app, base_url="http://localhost:8000") as client:
        assert client.get("/v1/models").status_code == 200
        assert client.post("/v1/chat/completions", json=HI).status_code == 200
        # A page of another site that posts to the local server (no CORS is granted, but the POST would run).
        r = client.post("/v1/chat/completions", json=HI, headers={"Origin": "http://evil.example"})
        assert assert_openai_error(r, 403)["code"] == "cross_site_request"


def test_the_hosts_come_from_where_it_listens(workspace, tiny_engine, monkeypatch):
    from serving.host_guard import allowed_hosts

    monkeypatch.setenv("RAGTUNE_ALLOWED_HOSTS", "rag.example.org")
    app = build_app(workspace, tiny_engine, hosts=allowed_hosts("10.1.2.3"))
    for host, status in [("10.1.2.3:8000", 200), ("rag.example.org", 200), ("127.0.0.1", 200), ("evil.example", 421)]:
        with TestClient(app, base_url=f"http://{host}") as client:
            assert client.get("/v1/models").status_code == status, host


def _raw_exchange(url: str, head: bytes, body_parts) -> bytes:
    """Send a request head and body parts on a plain socket, then read the reply. The server may answer and
    close before every part is sent: that is the point, and what it sent back is still read."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply) < reply.find(b"\r\n\r\n") + 4 + _length(reply):
            try:
                block = sock.recv(65536)
            except ConnectionResetError:
                break
            if not block:
                break
            reply += block
        return reply


def _length(reply: bytes) -> int:
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_body_over_the_cap_is_refused_before_it_is_read(app, serve_asgi):
    """The review's 11 MB body took 21.8 s and +1.5 GB before a 400. Here the server answers 413 having been
    sent only the head (a declared length) or 512 KB of a chunked body that never ends."""
    url = serve_asgi(app)
    declared = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (11 * MB))
    reply = _raw_exchange(url, declared, [b'{"model": "base", "messages": ['])
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b'"code":"request_too_large"' in reply and b"256 KB" in reply
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    reply = _raw_exchange(url, chunked, [b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)] * 8)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]


def test_deeply_nested_json_and_a_text_part_that_is_no_string_are_400s(app):
    with TestClient(app, base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000,
                        headers={"content-type": "application/json"})
        err = assert_openai_error(r, 400)
        assert err["code"] == "invalid_json" and "nested" in err["message"]
        parts = {"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                            {"type": "text", "text": 5}]}]}
        err = assert_openai_error(client.post("/v1/chat/completions", json=parts), 400)
        assert err["param"] == "messages" and "part 2" in err["message"] and "'text'" in err["message"]
