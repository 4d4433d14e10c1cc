"""`ragtune serve` is an OpenAI-compatible server: the official client, unmodified, talks to it.

One `ragtune serve` process (tiny model, embedded engine) over an indexed workspace serves the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ragtune.tether import stop_group, tethered_popen

REPO = Path(__file__).resolve().parents[2]
ASK_KEYS = {"answer", "variant", "adapter", "citations", "latency_s", "ttft_s", "prompt_tokens", "completion_tokens",
            "model", "engine"}


def cli(*args, env, check=True, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "RAGTUNE_HOME": str(tmp_path_factory.mktemp("home")), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def served(indexed_workspace, tiny_fact_lora, adapter_registrar, env, tmp_path_factory):
    ws = indexed_workspace
    folder = ws.path("adapters", "facts-api")
    shutil.copytree(tiny_fact_lora, folder, dirs_exist_ok=True)
    adapter_registrar(ws, "facts-api", folder, "tiny-llama")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = tethered_popen([sys.executable, "-m", "app.cli", "serve", "--model", "tiny-llama", "--port", str(port),
                               "-w", str(ws.root)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "ragtune serve did not start: " + log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc, timeout=30)


@pytest.fixture
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served + "/v1", api_key="not-needed-on-loopback", max_retries=0)


def test_official_openai_client_streams_a_cited_answer(client):
    names = {m.id for m in client.models.list()}
    assert {"base", "rag", "ft:facts-api", "ft+rag:facts-api"} <= names

    question = [{"role": "user", "content": "How long does the K7 battery last on one charge?"}]
    chunks = list(client.chat.completions.create(model="rag", messages=question, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    cited = final.model_extra["ragtune"]["citations"]
    assert ("product_manual_k7.pdf", 2) in {(c["doc"], c["page"]) for c in cited}

    whole = client.chat.completions.create(model="rag", messages=question, max_tokens=8)
    assert whole.choices[0].message.content == streamed.strip()  # greedy: the same words either way
    assert whole.usage.prompt_tokens > 100
    assert whole.model_extra["ragtune"]["citations"] == cited


def test_adapter_variant_through_the_api(client, facts):
    question, fact = facts[0]
    reply = client.chat.completions.create(model="ft:facts-api", max_tokens=24,
                                           messages=[{"role": "user", "content": question}])
    assert reply.choices[0].message.content == fact
    assert reply.model == "ft:facts-api" and reply.choices[0].finish_reason == "stop"
    base = client.chat.completions.create(model="tiny-llama", max_tokens=24,  # the model's own name means base
                                          messages=[{"role": "user", "content": question}])
    assert base.model == "base" and base.choices[0].message.content != fact


def test_bad_requests_get_clear_errors_and_the_server_keeps_running(client, served):
    import openai

    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="unknown adapter 'ghost'"):
        client.chat.completions.create(model="ft:ghost", messages=hi, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="Unknown variant"):
        client.chat.completions.create(model="gpt-4o", messages=hi, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="accepts at most"):
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "robot " * 5000}],
                                       max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="accepts at most"):
        list(client.chat.completions.create(model="base", messages=[{"role": "user", "content": "robot " * 5000}],
                                            max_tokens=4, stream=True))
    r = httpx.post(served + "/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    assert httpx.get(served + "/health", timeout=10).json()["status"] == "ok"
    assert client.chat.completions.create(model="base", messages=hi, max_tokens=3).choices[0].message.content


def test_a_foreign_host_and_an_oversized_body_are_refused(served):
    """DNS rebinding (`Host: evil.example`) used to get the models and a full RAG answer; an 11 MB body took
    21.8 s and +1.5 GB before a 400."""
    rebound = {"Host": "evil.example:8000"}
    for r in (httpx.get(served + "/v1/models", headers=rebound, timeout=30),
              httpx.post(served + "/v1/chat/completions", headers=rebound, timeout=30,
                         json={"model": "rag", "messages": [{"role": "user", "content": "hi"}]})):
        assert r.status_code == 421 and r.json()["error"]["code"] == "unknown_host", r.text
    huge = {"model": "base", "messages": [{"role": "user", "content": "x" * (11 << 20)}]}
    r = httpx.post(served + "/v1/chat/completions", json=huge, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    assert httpx.get(served + "/health", timeout=10).json()["status"] == "ok"


def ask(capsys, *args) -> tuple[int, str, str]:
    from app.cli import main

    capsys.readouterr()
    code = main(["ask", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ask_through_a_running_server(served, capsys):
    code, out, err = ask(capsys, "What is the maximum payload of the K7?", "--url", served, "--variant", "rag",
                         "--json", "--max-tokens", "8")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == ASK_KEYS
    assert result["variant"] == "rag" and result["engine"] == "embedded" and result["model"] == "tiny-llama"
    assert result["citations"] and result["completion_tokens"] >= 1
    code, out, err = ask(capsys, "What is the maximum payload of the K7?", "--url", served, "--variant", "rag",
                         "--stream", "--max-tokens", "8")
    assert code == 0 and out.lstrip().startswith(result["answer"]) and "Sources:" in out


def test_ask_in_process_prints_the_contract_json(workspace, tiny_engine, capsys):
    w = ["-w", str(workspace.root), "--model", "tiny-llama"]
    code, out, err = ask(capsys, "What is a pallet?", "--variant", "base", "--json", "--max-tokens", "5", *w)
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == ASK_KEYS
    assert result["variant"] == "base" and result["citations"] == [] and result["completion_tokens"] == 5
    assert result["engine"] == "embedded" and result["latency_s"] >= result["ttft_s"] > 0

    code, out, err = ask(capsys, "hi", "--variant", "ft:nope", *w)
    assert code == 2 and "unknown adapter 'nope'" in err
    code, out, err = ask(capsys, "hi", "--variant", "rag", *w)
    assert code == 2 and "ragtune index" in err
    code, out, err = ask(capsys, "hi", "--engine", "vllm", "--url", "http://127.0.0.1:9", *w)
    assert code == 2 and "not answering" in err

