"""Monitoring tab and the optional builder login, on one `ragtune app --model tiny-llama` started with
RAGTUNE_BUILDER_PASSWORD: the app refuses visitors without the password, and once logged in the
Monitoring tab shows the requests actually sent to the published assistant's OpenAI-compatible API."""

from __future__ import annotations

import re

import httpx
import pytest
from gradio_client import Client

from .conftest import started_app

pytestmark = pytest.mark.timeout(300)

PASSWORD = "correct horse battery"
WS = "mon"


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGTUNE_BUILDER_PASSWORD", PASSWORD)
        # RunningApp copies the environment when it starts, so the password stays set for the app only.
        with started_app(tmp_path_factory.mktemp("locked-home"), workspace=WS) as app:
            mp.undo()
            yield app


@pytest.fixture(scope="module")
def client(locked_app):
    return Client(locked_app.url, auth=("builder", PASSWORD), verbose=False, download_files=False)


def test_builder_needs_the_password(locked_app):
    url = locked_app.url
    assert httpx.get(url + "/config", timeout=10).status_code == 401
    assert httpx.get(url + "/gradio_api/info", timeout=10).status_code == 401
    with pytest.raises(Exception, match="(?i)login|credentials|auth"):
        Client(url, verbose=False)
    assert httpx.post(url + "/login", data={"username": "builder", "password": "wrong"}, timeout=10).status_code == 400
    with httpx.Client(base_url=url, timeout=10) as http:
        ok = http.post("/login", data={"username": "anyone", "password": PASSWORD})
        assert ok.status_code == 200 and ok.json() == {"success": True}
        assert http.get("/config").status_code == 200  # the session cookie opens the app
    with pytest.raises(Exception, match="(?i)login|credentials|incorrect"):
        Client(url, auth=("builder", "wrong"), verbose=False)


def test_wrong_logins_from_another_address_do_not_lock_the_owner_out(locked_app):
    """Issue 24: the Gradio login was throttled app-wide, so anyone's wrong guesses locked the owner out."""
    def login(address: str, password: str) -> int:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10) as http:
            return http.post(locked_app.url + "/login", data={"username": "x", "password": password}).status_code

    assert login("127.0.0.1", PASSWORD) == 200  # the owner's machine
    assert [login("127.0.0.9", f"guess{i}") for i in range(8)] == [400] * 8  # 5 free, then refused unchecked
    assert login("127.0.0.9", PASSWORD) == 400  # the guessing address waits, even with the right password
    assert login("127.0.0.1", PASSWORD) == 200  # the owner does not


def _chat(base: str, key: str, text: str) -> dict:
    r = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                   json={"model": WS, "max_tokens": 8, "messages": [{"role": "user", "content": text}]})
    return {"status": r.status_code, **r.json()}


def _row(page, model: str) -> dict:
    headers = [h.strip() for h in page.locator("#mon-table thead th").all_inner_texts()]
    for tr in page.locator("#mon-table [role=row]").all():
        cells = [c.strip() for c in tr.locator("[role=gridcell]").all_inner_texts()]
        if cells and cells[0] == model:
            return dict(zip(headers, cells))
    return {}


def test_monitoring_matches_requests_sent(locked_app, client, browser, artifacts_dir):
    status, _, _ = client.predict(WS, "base", "", "", api_name="/publish")
    base = re.search(r"href='(http://[^']+)/chat/" + WS, status).group(1)
    key, _ = client.predict(WS, "monitoring-test", 60, api_name="/create_key")
    assert key.startswith("rtk_")

    replies = [_chat(base, key, f"Question number {i}?") for i in range(3)]
    assert [r["status"] for r in replies] == [200, 200, 200], replies
    feedback = httpx.post(f"{base}/v1/feedback", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                          json={"message_id": replies[0]["ragtune"]["message_id"], "rating": "up"})
    assert feedback.status_code == 200, feedback.text
    # a second version that fails (RAG without an index): its errors are counted under its own variant
    from ragtune.workspace import Workspace
    from serving.deploy.deployments import publish

    publish(Workspace.open(WS, root=locked_app.home / "workspaces"), "rag")
    failed = _chat(base, key, "This one fails?")
    assert failed["status"] >= 400, failed

    data = client.predict(WS, "Last hour", api_name="/monitoring")
    by_model = {v["model"]: v for v in data["variants"]}
    assert set(by_model) == {"base", "rag"}
    b, r = by_model["base"], by_model["rag"]
    assert (b["requests"], b["errors"], b["deployment_versions"]) == (3, 0, [1])
    assert b["prompt_tokens"] == sum(x["usage"]["prompt_tokens"] for x in replies)
    assert b["completion_tokens"] == sum(x["usage"]["completion_tokens"] for x in replies)
    assert (b["answers"], b["rated"], b["up"]) == (3, 1, 1)
    assert b["feedback_rate"] == pytest.approx(1 / 3)
    assert 0 < b["latency_p50_s"] <= b["latency_p95_s"]
    assert (r["requests"], r["errors"], r["deployment_versions"]) == (1, 1, [2])
    assert sum(p["requests"] for p in data["series"] if p["model"] == "base") == 3

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(locked_app.url)
        page.get_by_label("username").fill("builder")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name=re.compile("login", re.I)).click()
        page.get_by_role("tab", name="Monitoring").click()
        page.wait_for_function("() => /\\bbase\\b/.test(document.querySelector('#mon-table').innerText)")
        row = _row(page, "base")
        assert row["Requests"] == "3" and row["Errors"] == "0", row
        assert row["Versions"] == "v1" and row["Feedback rate"] == "33%" and row["Thumbs up"] == "100%", row
        assert int(row["Completion tokens"]) == b["completion_tokens"]
        assert float(row["Latency p95 (s)"]) == pytest.approx(b["latency_p95_s"], abs=0.01)
        assert _row(page, "rag")["Errors"] == "1"
        assert "4 requests" in page.locator("#mon-status").inner_text()
        page.locator("#mon-plot img, #mon-plot canvas, #mon-plot svg").first.wait_for()

        # the open tab follows new traffic by itself (gr.Timer), without pressing Refresh
        from serving.deploy.deployments import rollback

        rollback(Workspace.open(WS, root=locked_app.home / "workspaces"))
        assert _chat(base, key, "One more?")["status"] == 200
        page.wait_for_function("() => document.querySelector('#mon-status').innerText.includes('5 requests')",
                               timeout=30_000)
        assert _row(page, "base")["Requests"] == "4"
        shots = artifacts_dir / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "09-monitoring.png"), full_page=True)
    finally:
        context.close()
