"""`ragtune ask --url` against a server that speaks the OpenAI chat API: the answer read with the openai
client (also the stream), and every failure said in one sentence. A small stand-in server, no model."""

from __future__ import annotations

import json

import pytest

SERVER_ANSWER = ["The K7 ", "carries ", "40 kg."]
RAGTUNE = {"variant": "rag", "adapter": None, "citations": [{"n": 1, "citation": "manual.pdf p. 2"}],
           "latency_s": 0.25, "ttft_s": 0.05, "model": "tiny-llama", "engine": "embedded"}


def _stand_in(requests: list[dict]):
    """/health as `ragtune serve` answers it, and /v1/chat/completions: model 'rag' answers (streamed or
    whole), 'base' fails after its first words (an error event inside the stream), any other is a 400."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    def sse(obj) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    def chunk(delta, finish=None, **extra):
        return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "rag",
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    async def health(_request):
        return JSONResponse({"status": "ok", "ragtune": "test"})

    async def chat(request):
        body = await request.json()
        requests.append(body)
        if body["model"] not in ("rag", "base"):
            return JSONResponse({"error": {"message": f"No adapter for '{body['model']}': train one first.",
                                           "type": "invalid_request_error", "param": "model",
                                           "code": "model_not_found"}}, status_code=400)
        if not body.get("stream"):
            return JSONResponse({"id": "c1", "object": "chat.completion", "created": 1, "model": "rag",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": "".join(SERVER_ANSWER)}}],
                                 "usage": {"prompt_tokens": 120, "completion_tokens": 6, "total_tokens": 126},
                                 "ragtune": RAGTUNE})

        def events():
            yield sse(chunk({"role": "assistant", "content": ""}))
            if body["model"] == "base":
                yield sse(chunk({"content": "The K7 "}))
                yield sse({"error": {"message": "The model failed while answering: out of memory.",
                                     "type": "server_error", "param": None, "code": "server_error"}})
            else:
                for words in SERVER_ANSWER:
                    yield sse(chunk({"content": words}))
                yield sse(chunk({}, "stop", ragtune=RAGTUNE))
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield sse(chunk(None, usage={"prompt_tokens": 120, "completion_tokens": 6, "total_tokens": 126}))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/health", health), Route("/v1/chat/completions", chat, methods=["POST"])])


def ask(capsys, *args) -> tuple[int, str, str]:
    from app.cli import main

    capsys.readouterr()
    code = main(["ask", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def stand_in(serve_asgi):
    requests: list[dict] = []
    return serve_asgi(_stand_in(requests)), requests


def test_a_streamed_answer_is_printed_as_it_comes_with_its_sources_and_token_counts(stand_in, capsys):
    url, requests = stand_in
    code, out, err = ask(capsys, "What does the K7 carry?", "--url", url, "--variant", "rag", "--stream", "-k", "3")
    assert code == 0, err
    assert out.startswith("The K7 carries 40 kg.\n") and "[1] manual.pdf p. 2" in out
    assert requests[-1]["stream"] is True and requests[-1]["ragtune"] == {"k": 3}

    code, out, err = ask(capsys, "What does the K7 carry?", "--url", url, "--variant", "rag", "--stream", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["answer"] == "The K7 carries 40 kg." and result["citations"] == RAGTUNE["citations"]
    # the stream asks for its usage now, so a streamed answer reports its tokens like a whole one
    assert (result["prompt_tokens"], result["completion_tokens"]) == (120, 6)

    code, out, err = ask(capsys, "What does the K7 carry?", "--url", url, "--variant", "rag", "--json")
    assert code == 0, err
    assert json.loads(out) == {**result, "latency_s": RAGTUNE["latency_s"]}


def test_a_bad_model_and_a_failure_mid_stream_are_one_sentence_each(stand_in, capsys):
    url, _ = stand_in
    for stream in ([], ["--stream"]):
        code, out, err = ask(capsys, "hi", "--url", url, "--variant", "ft:ghost", *stream)
        assert code == 2 and err.strip() == "error: No adapter for 'ft:ghost': train one first.", err
    code, out, err = ask(capsys, "hi", "--url", url, "--variant", "base", "--stream")
    assert code == 2 and err.strip() == "error: The model failed while answering: out of memory.", err
    assert out.startswith("The K7 ")  # the words that came before the failure were shown


def test_a_server_that_stops_answering_is_one_sentence(stand_in, capsys, monkeypatch):
    """The server answered /health and then was gone (here: its chat URL points at a closed port)."""
    from ragtune.net import free_port

    url, _ = stand_in
    import app.commands.serving_cmds as cmds

    monkeypatch.setattr(cmds, "_is_ragtune_server", lambda _url: True)
    dead = f"http://127.0.0.1:{free_port()}"
    code, out, err = ask(capsys, "hi", "--url", dead, "--variant", "rag", "--stream")
    assert code == 2 and err.startswith(f"error: The ragtune server at {dead} did not answer (")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
