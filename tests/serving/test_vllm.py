"""A real vLLM server on this CPU with Gemma 3 270M: variants, runtime LoRA, streaming, crash recovery.

One server serves the whole module (starting one takes about a minute); it is stopped by its
process group at the end. The crash test kills it, so it runs last.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import httpx
import pytest

from ragtune.errors import BadInputError, ServerUnavailableError
from ragtune.net import free_port
from ragtune.workspace import Workspace
from serving.engine import CancelToken, GenerationCancelled, SamplingOptions
from serving.factory import get_engine
from serving.plain_prompt import PLAIN_STOP
from serving.vllm_engine import VLLMEngine
from serving.vllm_process import VLLMServer

pytestmark = pytest.mark.slow

GREEDY = SamplingOptions(max_tokens=24)


@pytest.fixture(scope="module")
def stack(gemma_llm, lora_trainer, facts, tmp_path_factory):
    """The vLLM server (starting in the background) and, meanwhile, a LoRA freshly trained on Gemma."""
    logs = tmp_path_factory.mktemp("vllm-logs")
    # The product's start limit (600 s), inside the test's 900 s: it starts in about a minute, but one start
    # under a load of 9-10 here took just over the 420 s this fixture used to allow.
    server = VLLMServer("gemma-3-270m", max_model_len=1024, kv_cache_gib=1, max_loras=2, max_lora_rank=16,
                        log_dir=logs)
    started: dict = {}

    def start():
        try:
            server.start()
        except Exception as exc:  # reported by the main thread
            started["error"] = exc

    thread = threading.Thread(target=start)
    thread.start()
    lora = lora_trainer(gemma_llm, tmp_path_factory.mktemp("gemma-lora") / "facts", facts[:2], steps=14, lr=5e-3)
    thread.join()
    if "error" in started:
        raise started["error"]
    engine = VLLMEngine(server)
    yield engine, server, lora
    pgid = server.pid
    engine.close()
    assert not server.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # the engine-core children went with it


@pytest.fixture(scope="module")
def gemma_assistant(stack, indexed_workspace):
    from app.wiring.assistants import build_assistant as make_assistant

    return make_assistant(indexed_workspace, stack[0])


@pytest.fixture(scope="module")
def registered_lora(stack, gemma_assistant, adapter_registrar) -> str:
    """The LoRA trained in `stack`, registered in the workspace as 'gemma-facts' (once per module)."""
    ws = gemma_assistant.ws
    folder = ws.path("adapters", "gemma-facts")
    if not folder.exists():
        shutil.copytree(stack[2], folder)
        adapter_registrar(ws, "gemma-facts", folder, "gemma-3-270m")
    return "gemma-facts"


def test_same_greedy_text_on_vllm_and_embedded(stack):
    vllm = stack[0]
    embedded = get_engine("embedded", model="gemma-3-270m")
    for question in ("Write one sentence about warehouse robots.", "What is the capital of France?"):
        msgs = [{"role": "user", "content": question}]
        a, b = vllm.generate(msgs, GREEDY), embedded.generate(msgs, GREEDY)
        assert a.text == b.text and a.text.strip()
        assert (a.prompt_tokens, a.completion_tokens, a.finish_reason) == \
               (b.prompt_tokens, b.completion_tokens, b.finish_reason)


def test_plain_prompts_answer_as_on_the_embedded_engine(stack, monkeypatch):
    """A base model's plain prompt may not be answered with a new line first: the embedded engine forbids
    it at the first position (begin-suppress), vLLM asks that first token on its own; greedy answers agree."""
    vllm = stack[0]
    embedded = get_engine("embedded", model="gemma-3-270m")
    assert vllm.newline_ids == embedded.newline_ids and vllm.newline_ids
    options = SamplingOptions(max_tokens=24, stop=PLAIN_STOP)
    passages = ("[1] manual.pdf, page 2:\nThe K7 battery lasts 9 hours on one charge. Charging takes 2 hours.\n\n"
                "[2] manual.pdf, page 3:\nThe warranty covers 2 years.")
    france = [{"role": "user", "content": "What is the capital of France?"}]
    for msgs in ([{"role": "system", "content": passages}, {"role": "user", "content": "How long does the K7 battery last?"}],
                 france):
        a, b = vllm.generate(msgs, options, plain=True), embedded.generate(msgs, options, plain=True)
        assert a.text == b.text and a.text.strip()
        assert (a.prompt_tokens, a.completion_tokens) == (b.prompt_tokens, b.completion_tokens)
        # An answer given its start (as one stopped at a colon is continued) goes on from it on both engines.
        opened = msgs + [{"role": "assistant", "content": " ".join(a.text.split()[:2])}]
        c, d = vllm.generate(opened, options, plain=True), embedded.generate(opened, options, plain=True)
        assert c.text == d.text and c.text.strip() and not c.text.startswith("\n")
        assert c.prompt_tokens == d.prompt_tokens > a.prompt_tokens
    # The rule holds at the first position only, whatever token it forbids: forbid the one the model wants.
    wanted = embedded.generate(france, options, plain=True).text
    first = embedded.tokenizer.encode(" " + wanted.split()[0], add_special_tokens=False)
    assert len(first) == 1
    for engine in (vllm, embedded):
        monkeypatch.setattr(engine, "newline_ids", sorted(engine.newline_ids + first))
    a, b = vllm.generate(france, options, plain=True), embedded.generate(france, options, plain=True)
    assert a.text == b.text and a.text.strip() and not a.text.startswith(" " + wanted.split()[0])


def test_the_frequency_penalty_gives_the_same_answers_on_both_engines(stack):
    """The answer's own tokens are counted alike on both engines, the plain prompt's first token (asked
    alone on vLLM, then sent as prompt) included; and the penalty changes a greedy answer that repeats."""
    vllm, embedded = stack[0], get_engine("embedded", model="gemma-3-270m")
    question = [{"role": "user", "content": "List the days of the week, then list them again."}]
    for plain in (False, True):
        plain_opts = SamplingOptions(max_tokens=40, stop=PLAIN_STOP if plain else None)
        penalised = SamplingOptions(max_tokens=40, stop=PLAIN_STOP if plain else None, frequency_penalty=1.5)
        a, b = vllm.generate(question, penalised, plain=plain), embedded.generate(question, penalised, plain=plain)
        assert a.text == b.text and a.text.strip()
        assert a.completion_tokens == b.completion_tokens
        assert embedded.generate(question, plain_opts, plain=plain).text != b.text


def test_streaming_from_vllm(stack):
    engine = stack[0]
    items = list(engine.stream([{"role": "user", "content": "Name three colours."}], GREEDY))
    final = items[-1]
    assert "".join(items[:-1]) == final.text and len(items) > 3
    assert final.completion_tokens == 24 and final.ttft_s is not None and final.ttft_s < final.latency_s


def _running_requests(engine) -> float:
    text = httpx.get(engine.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running") and not line.startswith("#"))


def test_a_cancelled_stream_stops_on_the_server(stack):
    engine = stack[0]
    cancel = CancelToken()
    items = engine.stream([{"role": "user", "content": "Write a very long story about robots."}],
                          SamplingOptions(max_tokens=900, temperature=1.0, seed=3), cancel=cancel)
    deltas = [next(items) for _ in range(3)]
    assert all(isinstance(d, str) for d in deltas)
    cancel.cancel()  # the client went away
    with pytest.raises(GenerationCancelled):
        list(items)
    # vLLM aborted the request: nothing left running (polled: the abort reaches its scheduler asynchronously)
    deadline = time.monotonic() + 30
    while _running_requests(engine) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running_requests(engine) == 0
    assert engine.generate([{"role": "user", "content": "hi"}], SamplingOptions(max_tokens=2)).completion_tokens == 2


def test_fresh_adapter_is_served_seconds_after_training(stack, gemma_assistant, facts, request):
    engine, server, lora = stack
    pid, restarts = server.pid, server.restarts  # another test may have restarted it before this one
    question, fact = facts[0]
    before = gemma_assistant.answer(question, "base", options=GREEDY).text
    assert fact not in before

    request.getfixturevalue("registered_lora")
    tuned = gemma_assistant.answer(question, "ft:gemma-facts", options=GREEDY)
    assert tuned.text != before and "PURPLE-77" in tuned.text  # learned in 14 steps, loaded without a restart
    assert server.pid == pid and server.restarts == restarts
    assert any(name.startswith("gemma-facts-") for name in engine.adapters())
    listed = httpx.get(server.url + "/v1/models", timeout=10).json()["data"]
    assert any(m["id"].startswith("gemma-facts-") for m in listed)
    assert gemma_assistant.answer(question, "base", options=GREEDY).text == before


def test_four_variants_through_vllm(gemma_assistant, facts, registered_lora):
    question = "How long does the K7 battery last on one charge?"
    answers = {v: gemma_assistant.answer(question, v, adapter="gemma-facts" if v.startswith("ft") else None,
                                         options=GREEDY) for v in ("base", "rag", "ft", "ft+rag")}
    for variant, answer in answers.items():
        assert answer.variant == variant and answer.engine == "vllm" and answer.model == "gemma-3-270m"
        assert answer.text and answer.completion_tokens >= 1 and answer.latency_s > 0
        assert bool(answer.citations) == variant.endswith("rag")
        assert (answer.adapter == "gemma-facts") == variant.startswith("ft")
    for variant in ("rag", "ft+rag"):
        assert ("product_manual_k7.pdf", 2) in {(c["doc"], c["page"]) for c in answers[variant].citations}
    assert answers["rag"].text != answers["ft+rag"].text or answers["base"].text != answers["ft"].text


def test_openai_client_streams_from_ragtune_api_over_vllm(stack, gemma_assistant, serve_asgi, registered_lora):
    from openai import OpenAI

    from serving.openai_api import build_app

    engine = stack[0]
    url = serve_asgi(build_app(gemma_assistant.ws, engine, assistant=gemma_assistant))
    client = OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0)
    stream = client.chat.completions.create(model="ft+rag:gemma-facts", stream=True, max_tokens=16,
                                            messages=[{"role": "user", "content": "What is the K7's payload?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert text.strip() and final.model_extra["ragtune"]["engine"] == "vllm"
    assert final.model_extra["ragtune"]["adapter"] == "gemma-facts" and final.model_extra["ragtune"]["citations"]


def test_bad_requests_get_clear_errors_and_the_server_keeps_running(stack):
    engine = stack[0]
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(BadInputError, match="Unknown adapter 'ghost'"):
        engine.generate(hi, GREEDY, adapter="ghost")
    with pytest.raises(BadInputError, match="accepts at most 1024"):
        engine.generate([{"role": "user", "content": "robot " * 1100}], GREEDY)
    with pytest.raises(BadInputError, match="could not load"):
        engine.load_adapter("broken", _broken_adapter(stack[2], engine))
    assert engine.generate(hi, SamplingOptions(max_tokens=2)).completion_tokens == 2


def _broken_adapter(lora, engine):
    """A LoRA folder whose rank exceeds what the server accepts (max_lora_rank=16)."""
    import json
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="broken-lora-"))
    shutil.copytree(lora, folder, dirs_exist_ok=True)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 64
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_recovers_after_the_server_is_killed(stack, gemma_assistant, facts, registered_lora):
    engine, server, _ = stack
    question, fact = facts[0]
    before = gemma_assistant.answer(question, f"ft:{registered_lora}", options=GREEDY).text
    old_pid = server.pid
    os.killpg(old_pid, signal.SIGKILL)  # a crash: the server and its engine core vanish at once
    time.sleep(0.5)
    assert not engine.healthy()
    after = gemma_assistant.answer(question, f"ft:{registered_lora}", options=GREEDY)  # waits for the restart
    assert after.text == before  # the adapter was loaded again into the new server
    assert server.restarts >= 1 and server.pid != old_pid and engine.healthy()
    assert gemma_assistant.answer(question, "base", options=GREEDY).text


def test_a_dead_url_is_a_clear_error():
    with pytest.raises(ServerUnavailableError, match="not answering"):
        VLLMEngine("http://127.0.0.1:9")


def test_a_server_that_cannot_start_reports_its_log(tmp_path):
    server = VLLMServer("tiny-llama", extra_args=["--no-such-vllm-option"], log_dir=tmp_path, watch=False)
    with pytest.raises(ServerUnavailableError, match="exited with code") as info:
        server.start()
    assert "no-such-vllm-option" in str(info.value)  # the tail of vLLM's own log says what was wrong
    assert not server.alive()


def test_gpu_and_scale_out_options_pass_through(gemma_llm):
    gpu = VLLMServer("gemma-3-270m", device="cuda", extra_args=["--tensor-parallel-size", "2",
                                                               "--data-parallel-size", "2"])
    argv, env = gpu.argv(), gpu.environment()
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" not in argv and argv[argv.index("--dtype") + 1] == "auto"
    assert argv[-4:] == ["--tensor-parallel-size", "2", "--data-parallel-size", "2"]
    assert "VLLM_CPU_KVCACHE_SPACE" not in env or env["VLLM_CPU_KVCACHE_SPACE"] == os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    cpu = VLLMServer("gemma-3-270m", device="cpu", kv_cache_gib=1.5)
    argv, env = cpu.argv(), cpu.environment()
    assert "--enforce-eager" in argv and "--enable-lora" in argv and "--chat-template" in argv
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"


def test_kill_9_of_ragtune_serve_takes_its_vllm_server_with_it(tmp_path):
    """`ragtune serve --engine vllm` killed with SIGKILL (no atexit, no cleanup): its vLLM server and the
    server's children are gone within 20 s instead of running on under init."""
    import subprocess
    import sys

    import psutil

    ws = Workspace.create("serve-kill", root=tmp_path / "workspaces")
    port, vllm_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    owner = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--engine", "vllm", "--model", "tiny-llama",
                              "--port", str(port), "--vllm-port", str(vllm_port), "-w", str(ws.root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    children: list = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert owner.poll() is None, "ragtune serve exited while starting"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("ragtune serve --engine vllm did not come up in 300 s")
        children = psutil.Process(owner.pid).children(recursive=True)
        assert any("vllm" in " ".join(c.cmdline()) for c in children), [c.cmdline() for c in children]
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"outlived their owner: {[p.cmdline() for p in alive]}"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{vllm_port}/health", timeout=2)
    finally:
        owner.kill()
        for child in children:  # whatever a failure left behind
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
