"""The one app factory: both servers share their error codes, stream encoder and typed bodies; each surface's
caller policy decides what a state-changing request from another site gets."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from ragtune.errors import BadInputError, ModelNotFoundError, ServerUnavailableError
from serving.deploy import keys
from serving.deploy.loadtest import LoadResult
from serving.deploy.server import build_deploy_app
from serving.engine import GenerationCancelled
from serving.openai_api import build_app
from serving.openai_errors import ApiError, error_for
from serving.openai_protocol import CompletionIds, ErrorCode
from serving.openai_stream import DONE_EVENT, AnswerDone, AnswerFailed, TextDelta, encode_chunks

from .conftest import PAGE, auth, chat_body

CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def events_of(lines) -> list:
    assert lines[-1] == DONE_EVENT
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def test_one_code_per_cause_in_both_servers():
    assert error_for(ServerUnavailableError("down")).code == ErrorCode.SERVICE_UNAVAILABLE == "service_unavailable"
    assert error_for(ServerUnavailableError("down")).status == 503
    assert (error_for(ModelNotFoundError("no")).status, error_for(ModelNotFoundError("no")).code) == (404, "model_not_found")
    assert (error_for(BadInputError("bad")).status, error_for(BadInputError("bad")).code) == (400, "invalid_request")
    assert (error_for(GenerationCancelled()).status, error_for(GenerationCancelled()).code) == (499, "cancelled")
    bug = error_for(KeyError("secret"))
    assert bug.status == 500 and bug.code == "internal_error" and "secret" not in bug.message
    assert "server_unavailable" not in {code.value for code in ErrorCode}


def test_the_stream_encoder_writes_openai_chunks_and_reports_failures_in_band():
    done = AnswerDone("Hi there", "stop", 5, 2, {"citations": []}, model="rag")
    chunks = events_of(list(encode_chunks(CompletionIds("rag"), [TextDelta("Hi"), TextDelta(" there"), done],
                                          include_usage=True)))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hi there"
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "stop" and final["ragtune"] == {"citations": []}
    assert final["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7  # include_usage
    assert len({c["id"] for c in chunks}) == 1 and "ragtune" not in chunks[1] and "usage" not in chunks[1]

    def backend_goes_down():
        yield TextDelta("Hi")
        raise ServerUnavailableError("The vLLM server stopped answering.")

    failed = events_of(list(encode_chunks(CompletionIds("rag"), backend_goes_down())))
    assert failed[-1]["error"] == {"message": "The vLLM server stopped answering.", "type": "server_error",
                                   "param": None, "code": "service_unavailable"}
    refused = events_of(list(encode_chunks(CompletionIds("rag"), [AnswerFailed(ApiError(400, "No."))])))
    assert refused[-1]["error"]["code"] == "invalid_request"


def test_closing_a_stream_closes_its_answer():
    closed = []

    def answer():
        try:
            yield TextDelta("a")
            yield TextDelta("b")
        finally:
            closed.append(True)

    lines = encode_chunks(CompletionIds("base"), answer())
    next(lines), next(lines)
    lines.close()
    assert closed == [True]


def test_feedback_bodies_are_typed_and_not_found_is_a_404_not_a_guess(published, tiny_engine):
    key, other = keys.create_key(published, "app", 1000), keys.create_key(published, "other", 1000)
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://localhost") as client:
        message_id = client.post("/v1/chat/completions", json=chat_body(),
                                 headers=auth(key)).json()["ragtune"]["message_id"]

        def feedback(body, who=key):
            r = client.post("/v1/feedback", json=body, headers=auth(who))
            return r.status_code, r.json().get("error", {}).get("code"), r.json().get("error", {}).get("param")

        assert feedback({"rating": "up"}) == (400, "missing_required_parameter", "message_id")
        assert feedback({"message_id": message_id, "rating": "meh"}) == (400, "invalid_type", "rating")
        assert feedback({"message_id": message_id, "correction": 7}) == (400, "invalid_type", "correction")
        assert feedback({"message_id": "msg-nobody", "rating": "up"}) == (404, "not_found", "message_id")
        assert feedback({"message_id": message_id, "rating": "up"}, who=other) == (404, "not_found", "message_id")
        assert feedback({"message_id": message_id}) == (400, "invalid_request", None)  # nothing to record
        r = client.post("/v1/feedback", json={"message_id": message_id, "rating": False}, headers=auth(key))
        assert r.status_code == 200 and r.json()["rating"] == "down"


def test_each_policy_sets_what_another_site_may_send(published, tiny_engine, workspace):
    key = keys.create_key(published, "app", 1000)
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://localhost") as client:
        # API_KEY: programs, not pages; a key is what proves the caller.
        assert client.post("/v1/chat/completions", json=chat_body(), headers={**auth(key), **CROSS_SITE}).status_code == 200
        # PAGE_SESSION: the page's header and cookie, checked by the route (403: not from the page).
        assert client.post("/chat/test/api/chat", json=chat_body(), headers=CROSS_SITE).status_code == 403
        # BUILDER: same site and the builder header.
        r = client.post("/builder/test/documents", headers=CROSS_SITE, files={"files": ("a.md", b"# A")})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request"
        assert client.get("/v1/models", headers=auth(key)).headers["x-content-type-options"] == "nosniff"
    with TestClient(build_app(workspace, tiny_engine), base_url="http://localhost") as client:
        # LOOPBACK (ragtune serve): no key, so no write from another site at all.
        r = client.post("/v1/chat/completions", json={"model": "base", **chat_body()}, headers=CROSS_SITE)
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request"
        assert client.get("/v1/models", headers=CROSS_SITE).status_code == 200  # reads are not refused
        assert client.get("/v1/models").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("stream", ["yes", 5])
def test_the_page_chat_body_is_checked_as_the_api_body(published, tiny_engine, stream):
    with TestClient(build_deploy_app(published, tiny_engine), base_url="http://localhost") as client:
        client.get("/chat/test")  # the session cookie
        r = client.post("/chat/test/api/chat", json=chat_body(stream=stream), headers=PAGE)
        assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_stored_load_results_with_the_old_name_are_read():
    row = {"clients": 1, "requests": 4, "ok": 4, "failed": 0, "wall_s": 1.0, "latency_p50_s": 0.2,
           "latency_p95_s": 0.3, "ttft_p50_s": 0.05, "ttft_p95_s": 0.06, "requests_per_s": 4.0,
           "completion_tokens": 124, "tokens_per_s": 124.0, "errors": []}
    assert LoadResult.from_dict(row).e2e_tokens_per_s == 124.0
    assert LoadResult.from_dict(LoadResult.from_dict(row).to_dict()) == LoadResult.from_dict(row)
