"""Who may reach what: keys, revoked keys, other workspaces' keys, page sessions, builder routes, limits."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from ragtune.workspace import Workspace
from serving.deploy import deployments, keys
from serving.deploy.server import DeployLimits, build_deploy_app

from .conftest import PAGE, auth, chat_body


@pytest.fixture
def two_workspaces(tmp_path):
    root = tmp_path / "served"
    a = Workspace.create("alpha", root=root)
    b = Workspace.create("beta", root=root)
    for ws in (a, b):
        deployments.publish(ws, "base")
    return root, a, b


def test_requests_without_valid_key_of_this_workspace_are_refused(two_workspaces, tiny_engine):
    root, a, b = two_workspaces
    key_a = keys.create_key(a, "a-app", 100)
    key_b = keys.create_key(b, "b-app", 100)
    revoked = keys.create_key(a, "old", 100)
    keys.revoke_key(a, "old")
    with TestClient(build_deploy_app(root, tiny_engine), base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 401 and "API key is required" in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json=chat_body(), headers=auth(revoked))
        assert r.status_code == 401 and "unknown or revoked" in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json=chat_body(), headers=auth("rtk_000000000000_" + "x" * 43))
        assert r.status_code == 401
        # A key routes to its own workspace; naming another workspace is refused.
        r = client.post("/w/alpha/v1/chat/completions", json=chat_body(), headers=auth(key_b))
        assert r.status_code == 403 and "another assistant" in r.json()["error"]["message"]
        r = client.post("/w/beta/v1/feedback", json={"message_id": "x", "rating": "up"}, headers=auth(key_a))
        assert r.status_code == 403
        ok_a = client.post("/w/alpha/v1/chat/completions", json=chat_body(), headers=auth(key_a))
        ok_b = client.post("/v1/chat/completions", json=chat_body(), headers=auth(key_b))
        assert ok_a.status_code == 200 and ok_a.json()["model"] == "alpha/base"
        assert ok_b.status_code == 200 and ok_b.json()["model"] == "beta/base"
        # B's key cannot rate A's answer, even through the route of its own workspace.
        msg_a = ok_a.json()["ragtune"]["message_id"]
        r = client.post("/v1/feedback", json={"message_id": msg_a, "rating": "down"}, headers=auth(key_b))
        assert r.status_code == 404
        r = client.post("/v1/feedback", json={"message_id": msg_a, "rating": "up"}, headers=auth(key_a))
        assert r.status_code == 200
    # Single-workspace mode: a key of another workspace does not exist here at all.
    with TestClient(build_deploy_app(a, tiny_engine), base_url="http://localhost") as client:
        assert client.post("/v1/chat/completions", json=chat_body(), headers=auth(key_b)).status_code == 401
        assert client.post("/v1/chat/completions", json=chat_body(), headers=auth(key_a)).status_code == 200


def test_rate_limits_hold_per_key(published, tiny_engine):
    slow = keys.create_key(published, "slow", 3)
    other = keys.create_key(published, "other", 3)
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://localhost") as client:
        codes = [client.post("/v1/chat/completions", json=chat_body(), headers=auth(slow)).status_code
                 for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        refused = client.post("/v1/chat/completions", json=chat_body(), headers=auth(slow))
        assert int(refused.headers["Retry-After"]) >= 1 and "limit 3 per minute" in refused.json()["error"]["message"]
        assert client.post("/v1/chat/completions", json=chat_body(), headers=auth(other)).status_code == 200
        assert 'ragtune_deploy_refused_total{reason="rate_limited",workspace="test"} 3.0' in client.get("/metrics").text


def test_page_sessions_are_per_workspace_and_rate_limited(two_workspaces, tiny_engine):
    root, a, b = two_workspaces
    limits = DeployLimits(page_rate_per_min=2)
    with TestClient(build_deploy_app(root, tiny_engine, limits=limits), base_url="http://localhost") as client:
        assert client.post("/chat/alpha/api/chat", json=chat_body(), headers=PAGE).status_code == 401
        page = client.get("/chat/alpha")
        assert page.status_code == 200 and "builder" not in page.text.lower()
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.post("/chat/alpha/api/chat", json=chat_body()).status_code == 403  # not from the page
        assert client.post("/chat/alpha/api/chat", json=chat_body(), headers=PAGE).status_code == 200
        # The cookie is scoped to /chat/alpha; replayed against beta it is refused.
        token = client.cookies.get("rt_page")
        r = client.post("/chat/beta/api/chat", json=chat_body(), headers={**PAGE, "Cookie": f"rt_page={token}"})
        assert r.status_code == 401
        assert client.post("/chat/alpha/api/chat", json=chat_body(), headers=PAGE).status_code == 200
        assert client.post("/chat/alpha/api/chat", json=chat_body(), headers=PAGE).status_code == 429
        assert client.get("/chat/nope").status_code == 404
        assert client.get("/chat/..%2Falpha").status_code == 404
        # The page session is not an API key.
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 401


def test_prompt_output_and_body_limits(published, tiny_engine):
    key = keys.create_key(published, "app", 1000)
    limits = DeployLimits(max_message_chars=200, max_prompt_chars=300, max_tokens=6, max_body_kb=8)
    with TestClient(build_deploy_app(published, tiny_engine, limits=limits), base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json=chat_body("x" * 201), headers=auth(key))
        assert r.status_code == 400 and "limit is 200" in r.json()["error"]["message"]
        long_chat = {"messages": [{"role": "user", "content": "q" * 150}, {"role": "assistant", "content": "a" * 150},
                                  {"role": "user", "content": "again?"}]}
        r = client.post("/v1/chat/completions", json=long_chat, headers=auth(key))
        assert r.status_code == 400 and "Start a new conversation" in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "y" * 20000}]},
                        headers=auth(key))
        assert r.status_code == 413
        r = client.post("/v1/chat/completions", content=b"{not json", headers=auth(key))
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json=chat_body(max_tokens=500), headers=auth(key))
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 6
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]},
                        headers=auth(key))
        assert r.status_code == 400


def test_builder_routes_need_the_builder_password_not_a_key(published, tiny_engine):
    key = keys.create_key(published, "app", 100)
    with TestClient(build_deploy_app(published, tiny_engine, builder_password="s3cret"), base_url="http://localhost") as client:
        assert client.get("/builder/test/deployments").status_code == 401
        assert client.get("/builder/test/deployments", headers=auth(key)).status_code == 401
        assert client.get("/metrics").status_code == 401
        ok = client.get("/builder/test/deployments", auth=("builder", "s3cret"))
        assert ok.status_code == 200 and ok.json()["current"]["variant"] == "base"
        assert client.get("/builder/test/monitoring", auth=("x", "wrong")).status_code == 401
        assert client.get("/builder/other/deployments", auth=("builder", "s3cret")).status_code == 404


def test_unpublished_assistant_answers_503(workspace, tiny_engine):
    key = keys.create_key(workspace, "app", 100)
    with TestClient(build_deploy_app(workspace, tiny_engine), base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
        assert r.status_code == 503 and "not published" in r.json()["error"]["message"]
        assert client.get("/chat/test").status_code == 404


def test_logs_hold_no_key_and_no_text(published, tiny_engine, caplog):
    key = keys.create_key(published, "app", 100)
    question = "What is the secret launch codename of project Zephyr?"
    caplog.set_level(logging.DEBUG)
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json=chat_body(question), headers=auth(key))
        answer = r.json()["choices"][0]["message"]["content"]
        client.post("/v1/feedback", json={"message_id": r.json()["ragtune"]["message_id"], "rating": "down",
                                          "correction": "The codename is Bluebird."}, headers=auth(key))
        client.post("/v1/chat/completions", json=chat_body(question), headers=auth(key[:-3] + "abc"))
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "answered ws=test" in text  # the server does log, just not the secrets
    secret = keys.parse_key(key)[1]
    for forbidden in (secret, question, "Bluebird", answer.strip() if len(answer.strip()) > 8 else secret):
        assert forbidden not in text
