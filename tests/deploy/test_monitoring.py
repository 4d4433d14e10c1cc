"""Requests, latency, tokens, errors and feedback per deployed variant: Prometheus and summary()."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from app.wiring.servers import deploy_app
from serving.deploy import deployments, keys, metrics

from .conftest import auth, chat_body


def test_metrics_and_summary_per_variant(published, tiny_engine, artifacts_dir):
    key = keys.create_key(published, "app", 1000)
    # The app `ragtune deploy` serves, so a rag answer reaches the (missing) index and fails there.
    with TestClient(deploy_app(published, tiny_engine), base_url="http://localhost") as client:
        answers = [client.post("/v1/chat/completions", json=chat_body(f"Question {i}?"), headers=auth(key)).json()
                   for i in range(2)]
        streamed = client.post("/v1/chat/completions", json=chat_body("Streamed?", stream=True), headers=auth(key))
        final = [json.loads(line[5:]) for line in streamed.text.splitlines()
                 if line.startswith("data:") and "ragtune" in line][0]
        for answer, rating in ((answers[0], "up"), (answers[1], "down")):
            r = client.post("/v1/feedback", json={"message_id": answer["ragtune"]["message_id"], "rating": rating},
                            headers=auth(key))
            assert r.status_code == 200
        deployments.publish(published, "rag")  # no index was built: every answer fails, and is counted
        failed = client.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
        assert failed.status_code == 400 and "index" in failed.json()["error"]["message"]
        prom = client.get("/metrics").text
        monitored = client.get("/builder/test/monitoring").json()

    tokens = sum(a["usage"]["completion_tokens"] for a in answers) + final["usage"]["completion_tokens"]
    assert 'ragtune_deploy_requests_total{model="base",status="ok",workspace="test"} 3.0' in prom
    assert 'ragtune_deploy_latency_seconds_count{model="base",workspace="test"} 3.0' in prom
    assert f'ragtune_deploy_tokens_total{{kind="completion",model="base",workspace="test"}} {float(tokens)}' in prom
    assert 'ragtune_deploy_errors_total{model="rag",reason="BadInputError",workspace="test"} 1.0' in prom
    assert 'ragtune_deploy_feedback_total{model="base",rating="up",workspace="test"} 1.0' in prom
    assert 'ragtune_deploy_feedback_rate{model="base",workspace="test"}' in prom

    summary = metrics.summary(published)
    assert summary["variants"] == monitored["variants"]
    by_model = {v["model"]: v for v in summary["variants"]}
    base, rag = by_model["base"], by_model["rag"]
    assert (base["requests"], base["errors"], base["completion_tokens"]) == (3, 0, tokens)
    assert base["latency_p95_s"] >= base["latency_p50_s"] > 0
    assert (base["up"], base["down"], base["answers"]) == (1, 1, 3)
    assert abs(base["feedback_rate"] - 2 / 3) < 1e-9 and base["up_rate"] == 0.5
    assert (rag["requests"], rag["errors"], rag["error_rate"]) == (1, 1, 1.0)
    assert sum(p["requests"] for p in summary["series"]) == 4

    fig = metrics.plot_summary(summary)
    assert len(fig.axes) == 4
    fig.savefig(artifacts_dir / "deploy_monitoring.png")
