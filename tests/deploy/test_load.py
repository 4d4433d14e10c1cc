"""32 concurrent streaming clients on loopback against the deployed assistant: no request fails."""

from __future__ import annotations

from serving.deploy import keys, metrics
from serving.deploy.loadtest import run_load
from serving.deploy.server import DeployServer, build_deploy_app


def test_32_concurrent_streaming_clients_all_succeed(published, tiny_engine):
    key = keys.create_key(published, "load", 10_000)
    app = build_deploy_app(published, tiny_engine)
    with DeployServer(app) as server:
        result = run_load(server.url, key, clients=32, per_client=1, max_tokens=12, timeout_s=120)
        prom = app.state.metrics.render().decode()
    assert result.failed == 0, result.errors
    assert result.ok == 32 and result.latency_p95_s >= result.latency_p50_s > 0
    assert 'ragtune_deploy_requests_total{model="base",status="ok",workspace="test"} 32.0' in prom
    summary = metrics.summary(published)
    (base,) = summary["variants"]
    assert base["requests"] == 32 and base["errors"] == 0 and base["completion_tokens"] == result.completion_tokens


def test_an_abandoned_stream_is_cancelled_not_an_error(published, tiny_engine):
    import httpx

    from serving.deploy.server import DeployLimits

    key = keys.create_key(published, "app", 1000)
    app = build_deploy_app(published, tiny_engine, limits=DeployLimits(max_tokens=800))
    with DeployServer(app) as server, httpx.Client(base_url=server.url, timeout=60,
                                                     headers={"Authorization": f"Bearer {key}"}) as client:
        body = {"messages": [{"role": "user", "content": "Tell me everything."}], "stream": True, "max_tokens": 800,
                "temperature": 1.0, "seed": 1}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            for i, _ in enumerate(response.iter_lines()):
                if i == 4:
                    break  # the user closed the tab
        after = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                          "max_tokens": 4})
        assert after.status_code == 200
    (base,) = metrics.summary(published)["variants"]
    assert (base["requests"], base["errors"], base["cancelled"]) == (2, 0, 1)


def test_streams_dropped_under_load_stop_and_metrics_return_to_zero(published, tiny_engine):
    from serving.deploy.loadtest import run_drops
    from serving.deploy.server import DeployLimits

    key = keys.create_key(published, "load", 10_000)
    budget = 200
    app = build_deploy_app(published, tiny_engine, limits=DeployLimits(max_tokens=budget))
    with DeployServer(app) as server:
        result = run_drops(server.url, key, clients=8, drop=3, drop_after=3, max_tokens=budget, timeout_s=300)
    assert result.failed == 0 and result.ok == 5, result.errors
    assert result.dropped == 3 and result.cancelled_counted == 3
    assert result.in_flight_end == 0 and result.in_flight_max_excess == 0
    with published.db() as conn:
        rows = conn.execute("SELECT status, completion_tokens FROM deploy_requests").fetchall()
    cancelled = [tokens for status, tokens in rows if status == "cancelled"]
    assert sorted(status for status, _ in rows) == ["cancelled"] * 3 + ["ok"] * 5
    # Each dropped answer stopped within a few tokens of its client leaving, not at its budget.
    assert all(tokens is not None and tokens < 3 + 30 for tokens in cancelled), cancelled


def test_a_refused_stream_fails_with_the_servers_sentence(published, tiny_engine):
    """The streams are read with the openai client; a refusal is counted with the server's own sentence
    (it was the raw JSON body), and no key means no Authorization header at all."""
    app = build_deploy_app(published, tiny_engine)
    with DeployServer(app) as server:
        no_key = run_load(server.url, None, clients=2, max_tokens=4, timeout_s=60)
        bad_key = run_load(server.url, "rtk_not-a-key", clients=1, max_tokens=4, timeout_s=60)
    assert (no_key.ok, no_key.failed) == (0, 2)
    assert no_key.errors == ["HTTP 401: An API key is required: send 'Authorization: Bearer <key>'. "
                             "Create one with `ragtune keys create`."] * 2
    assert bad_key.errors == ["HTTP 401: This API key is not valid (unknown or revoked)."]


def test_a_stream_that_fails_inside_or_stops_short_counts_as_failed(serve_asgi):
    """An error event after the first words, and a stream that ends (even with [DONE]) before the chunk that
    carries its finish_reason, are failures; a whole stream is not."""
    import json

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    def sse(obj) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    def chunk(delta, finish=None, **extra):
        return sse({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    async def chat(request):
        how = (await request.json())["messages"][0]["content"]

        def events():
            yield chunk({"role": "assistant", "content": ""})
            yield chunk({"content": "Hello"})
            if how == "error":
                yield sse({"error": {"message": "The model failed while answering.", "type": "server_error",
                                     "code": "server_error"}})
            elif how == "whole":
                yield chunk({}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    url = serve_asgi(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]))
    result = run_load(url, "k", clients=3, questions=["whole", "error", "short"], timeout_s=60)
    assert (result.ok, result.failed, result.completion_tokens) == (1, 2, 1)
    assert sorted(result.errors) == ["The model failed while answering.", "the stream ended before its last chunk"]
