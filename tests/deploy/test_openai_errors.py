"""Every bad OpenAI field is a 400 naming it, and every error (404 and 405 too) has OpenAI's shape."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.deploy import keys
from serving.deploy.server import build_deploy_app

from .conftest import auth, chat_body

BAD_FIELDS = [
    ("stream", "false"),  # a string: it used to stream
    ("max_tokens", 0),  # it used to give 256 tokens
    ("max_tokens", -3),
    ("max_tokens", 2.5),
    ("max_completion_tokens", "64"),
    ("seed", 99999999999999999999999),  # it used to be a 500 with a traceback
    ("seed", "abc"),
    ("temperature", "hot"),
    ("temperature", 7),
    ("top_p", 0),
    ("top_p", 1.5),
    ("n", 2),
    ("stop", [1, 2]),
    ("stop", ["a", "b", "c", "d", "e"]),
    ("presence_penalty", 9),
    ("stream_options", {"include_usage": "yes"}),
    ("conversation_id", 42),
    ("messages", "hello"),
    ("messages", []),
]


def assert_openai_error(r, status: int, param=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and isinstance(err["code"], str), err
    assert err["param"] == param, err
    return err


@pytest.fixture
def client(published, tiny_engine):
    key = keys.create_key(published, "app", 1000)
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://localhost",
                    headers=auth(key)) as c:
        yield c


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_FIELDS])
def test_each_bad_field_is_a_400_naming_it(client, field, value):
    r = client.post("/v1/chat/completions", json=chat_body(**{field: value}))
    err = assert_openai_error(r, 400, param=field if not field.startswith("stream_options") else
                              "stream_options.include_usage")
    assert err["type"] == "invalid_request_error" and "Traceback" not in err["message"]


def test_good_fields_still_answer(client):
    r = client.post("/v1/chat/completions", json=chat_body(seed=2 ** 63 - 1, temperature=0.7, top_p=0.9, stop=["\n"],
                                                            stream=False, user="u1", max_completion_tokens=4))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 4


def test_404_405_401_and_bad_json_have_the_openai_shape(client, published):
    err = assert_openai_error(client.get("/v1/nothing-here"), 404)
    assert err["code"] == "not_found"
    err = assert_openai_error(client.get("/v1/chat/completions"), 405)
    assert err["code"] == "method_not_allowed"
    err = assert_openai_error(client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": ""}), 401)
    assert err["code"] == "invalid_api_key"
    err = assert_openai_error(client.post("/v1/chat/completions", content=b"{oops",
                                          headers={"content-type": "application/json"}), 400)
    assert err["code"] == "invalid_json"
    assert_openai_error(client.get("/chat/nobody/api/chat"), 405)
    assert_openai_error(client.post("/w/nobody/v1/chat/completions", json=chat_body()), 403)


def test_the_builtin_openai_server_shares_the_format(workspace, tiny_engine):
    from serving.openai_api import build_app

    with TestClient(build_app(workspace, tiny_engine), base_url="http://localhost") as c:
        r = c.post("/v1/chat/completions", json={"model": "base", **chat_body(stream="false")})
        assert assert_openai_error(r, 400, param="stream")["code"] == "invalid_type"
        r = c.post("/v1/chat/completions", json={"model": "base", **chat_body(seed="abc")})
        assert_openai_error(r, 400, param="seed")
        assert assert_openai_error(c.get("/v1/none"), 404)["code"] == "not_found"
        assert assert_openai_error(c.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"
        ok = c.post("/v1/chat/completions", json={"model": "base", **chat_body()})
        assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"


def test_deeply_nested_json_and_a_text_part_that_is_no_string_are_400s(client):
    """Both were a plain-text 500 (the nested body also reset the connection); `ragtune serve` shares the
    reader and the check (tests/serving/test_serve_access.py)."""
    r = client.post("/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000,
                    headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400)
    assert err["code"] == "invalid_json" and "nested" in err["message"]
    parts = chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 5}]}])
    err = assert_openai_error(client.post("/v1/chat/completions", json=parts), 400, param="messages")
    assert "content part 2: 'text' must be a string (messages[0].content[1].text)" in err["message"]
