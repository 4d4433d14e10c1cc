"""The builder app answers only for its own host and takes no state change from another site."""

from __future__ import annotations

import httpx
import pytest

from .conftest import started_app


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with started_app(tmp_path_factory.mktemp("safety-home"), workspace="safe") as running:
        yield running


def _workspaces(app) -> set[str]:
    return {p.name for p in (app.home / "workspaces").iterdir() if p.is_dir()}


def test_dns_rebinding_and_cross_site_calls_create_nothing(app):
    call = app.url + "/gradio_api/call/create"
    rebound = httpx.post(call, json={"data": ["rebound"]}, headers={"Host": f"attacker.example:{app.port}"}, timeout=30)
    assert rebound.status_code == 421, rebound.text
    cross = httpx.post(call, json={"data": ["planted"]}, timeout=30,
                       headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403, cross.text
    form = httpx.post(app.url + "/gradio_api/upload", files={"files": ("x.md", b"# planted")}, timeout=30,
                      headers={"Origin": "https://evil.example"})
    assert form.status_code == 403, form.text
    assert "rebound" not in _workspaces(app) and "planted" not in _workspaces(app)


def test_the_app_itself_still_works(app):
    from gradio_client import Client

    page = httpx.get(app.url + "/", timeout=30)
    assert page.status_code == 200
    same_origin = httpx.post(app.url + "/gradio_api/call/create", json={"data": ["mine"]}, timeout=30,
                             headers={"Origin": app.url, "Sec-Fetch-Site": "same-origin"})
    assert same_origin.status_code == 200, same_origin.text
    Client(app.url, verbose=False, download_files=False).predict("viaclient", api_name="/create")
    assert {"viaclient"} <= _workspaces(app)
