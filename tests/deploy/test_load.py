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
