"""Builder routes are safe from other sites: no planted upload, no DNS rebinding, wrong passwords slowed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serving.deploy.server import build_deploy_app

DOC = ("planted.md", b"# Refund policy\nAll refunds go to account 12-3456.", "text/markdown")
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def _ingest(*args):
    from app.wiring import deploy_uploads

    return deploy_uploads()(*args)


def _stored(ws) -> set[str]:
    from retrieval.documents import list_documents

    return {d["name"] for d in list_documents(ws)}


def test_a_cross_site_upload_is_refused_with_or_without_password(published, tiny_engine):
    for password in ("", "pw"):
        app = build_deploy_app(published, tiny_engine, builder_password=password, start_ingest=_ingest)
        creds = ("b", "pw") if password else None
        with TestClient(app, base_url="http://localhost") as client:
            # What a page on evil.example can make a browser send: a form post (no custom header).
            for headers in (CROSS_SITE, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "same-site"},
                            {"Origin": "null"}, {}):
                r = client.post("/builder/test/documents", files={"files": DOC}, headers=headers, auth=creds)
                assert r.status_code == 403, (password, headers, r.text)
                assert r.json()["error"]["code"] == "cross_site_request"
            # Even with the custom header, a browser's cross-site marks are refused.
            r = client.post("/builder/test/documents", files={"files": DOC}, auth=creds,
                            headers={**CROSS_SITE, "X-Ragtune-Builder": "1"})
            assert r.status_code == 403
            assert "planted.md" not in _stored(published)
            # Reading is not state-changing: no proof needed beyond the password.
            assert client.get("/builder/test/deployments", auth=creds, headers=CROSS_SITE).status_code == 200
    # The builder's own tools (and the same origin) get through.
    with TestClient(build_deploy_app(published, tiny_engine, builder_password="", start_ingest=_ingest),
                    base_url="http://localhost") as client:
        r = client.post("/builder/test/documents", files={"files": DOC},
                        headers={"X-Ragtune-Builder": "1", "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 202, r.text
    from ragtune.jobs import wait_job

    assert wait_job(published, r.json()["job"], timeout=240).status == "succeeded"
    assert "planted.md" in _stored(published)


def test_a_dns_rebinding_host_is_refused(published, tiny_engine):
    app = build_deploy_app(published, tiny_engine, builder_password="", start_ingest=_ingest)
    with TestClient(app, base_url="http://localhost") as client:
        for path, method in (("/builder/test/documents", "post"), ("/builder/test/deployments", "get"),
                             ("/chat/test", "get"), ("/metrics", "get")):
            r = client.request(method.upper(), path, headers={"Host": "attacker.example:7920", "X-Ragtune-Builder": "1"},
                               files={"files": DOC} if method == "post" else None)
            assert r.status_code == 421, (path, r.text)
            assert r.json()["error"]["code"] == "unknown_host"
        assert client.get("/builder/test/deployments", headers={"Host": "127.0.0.1:7920"}).status_code == 200
    assert "planted.md" not in _stored(published)


def test_allowed_hosts_are_configurable(published, tiny_engine, monkeypatch):
    monkeypatch.setenv("RAGTUNE_ALLOWED_HOSTS", "assistant.corp.example, other.example")
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://assistant.corp.example") as client:
        assert client.get("/chat/test").status_code == 200
        assert client.get("/chat/test", headers={"Host": "attacker.example"}).status_code == 421


def test_wrong_builder_passwords_are_slowed(published, tiny_engine):
    from serving.deploy.security import LoginThrottle

    app = build_deploy_app(published, tiny_engine, builder_password="right-one")
    now = [1000.0]
    app.state.deploy.throttle = LoginThrottle(free=5, clock=lambda: now[0])
    with TestClient(app, base_url="http://localhost") as client:
        codes = [client.get("/builder/test/deployments", auth=("b", f"guess{i}")).status_code for i in range(5)]
        assert codes == [401] * 5
        # The sixth try must wait, even with the right password: guessing cannot go faster.
        r = client.get("/builder/test/deployments", auth=("b", "right-one"))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "login_throttled"
        now[0] += 1.5
        assert client.get("/builder/test/deployments", auth=("b", "guess6")).status_code == 401
        now[0] += 1.5  # the wait doubled: 2 s after the 6th failure
        assert client.get("/builder/test/deployments", auth=("b", "right-one")).status_code == 429
        now[0] += 1.0
        assert client.get("/builder/test/deployments", auth=("b", "right-one")).status_code == 200
        # A success clears the count.
        assert client.get("/builder/test/deployments", auth=("b", "wrong")).status_code == 401
        assert client.get("/builder/test/deployments", auth=("b", "right-one")).status_code == 200


def test_gradio_login_is_slowed_after_failures():
    from serving.deploy.security import LoginThrottle
    from serving.deploy.server import gradio_auth

    now = [0.0]
    check = gradio_auth("right-one", LoginThrottle(free=3, clock=lambda: now[0]))
    assert [check("u", f"g{i}") for i in range(3)] == [False] * 3
    assert check("u", "right-one") is False  # within the wait
    now[0] += 60
    assert check("u", "right-one") is True


def test_guesses_from_many_addresses_are_limited_in_total_and_cannot_lock_the_owner_out(published, tiny_engine):
    """Issue 24: 250 guesses from 50 loopback addresses were all checked, and requests without a password
    counted as wrong guesses, so anyone could lock the owner out."""
    from serving.deploy.security import LoginThrottle

    app = build_deploy_app(published, tiny_engine, builder_password="right-one")
    now = [1000.0]
    app.state.deploy.throttle = LoginThrottle(free=5, global_per_min=10, clock=lambda: now[0])
    path = "/builder/test/deployments"

    def client(address: str) -> TestClient:
        return TestClient(app, base_url="http://localhost", client=(address, 50000))

    owner = client("127.0.0.1")
    # Requests without a password (a browser's first request, a scanner) are not guesses.
    for headers in ({}, {"Authorization": "Basic !!"}, {"Authorization": "Bearer x"}):
        for _ in range(10):
            r = owner.get(path, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), r.text
    assert owner.get(path, auth=("b", "right-one")).status_code == 200
    # 250 wrong guesses from 50 other addresses: only the total budget (10) is checked, the rest wait.
    codes = []
    for i in range(250):
        r = client(f"127.0.0.{2 + i % 50}").get(path, auth=("b", f"guess{i}"))
        codes.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "login_throttled" and int(r.headers["Retry-After"]) >= 1
    assert codes.count(401) == 10 and codes.count(429) == 240, codes
    # The owner's address has logged in before and has not failed: the right password still works.
    assert owner.get(path, auth=("b", "right-one")).status_code == 200
    # A new address is held back while the budget is spent (its guess would be one more), told when to retry.
    newcomer = client("127.0.1.1")
    r = newcomer.get(path, auth=("b", "right-one"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == 6
    now[0] += 6
    assert newcomer.get(path, auth=("b", "right-one")).status_code == 200
    # A minute of guessing from 50 fresh addresses, each trying every second: 10 guesses checked in all.
    checked = 0
    for second in range(60):
        now[0] += 1
        for a in range(50):
            checked += client(f"127.0.2.{a}").get(path, auth=("b", f"g{second}-{a}")).status_code == 401
    assert checked == 10, checked
    # The owner, still not locked out; a wrong guess from the owner's own address counts against it alone.
    assert owner.get(path, auth=("b", "right-one")).status_code == 200
