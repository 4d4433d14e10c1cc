"""`ragtune ask ...` and `ragtune serve ...`."""

from __future__ import annotations

import argparse
import sys
import time

from app.wiring.assistants import EngineSpec, build_assistant, build_engine
from ragtune.errors import BadInputError, ServerUnavailableError
from ragtune.models import DEFAULT_LLM
from serving.engine import Engine, SamplingOptions
from serving.factory import close_engine
from serving.host_guard import allowed_hosts
from serving.openai_api import build_app
from serving.variants import Answer, format_variant, parse_variant

from .common import add_json_arg, add_workspace_arg, open_workspace, print_json

ASK_KEYS = ("answer", "variant", "adapter", "citations", "latency_s", "ttft_s", "prompt_tokens", "completion_tokens",
            "model", "engine")


def register(sub) -> None:
    p = sub.add_parser("ask", help="ask one question to an assistant variant (base, rag, ft, ft+rag)",
                       description="Ask one question. The engine runs in this process (embedded, the default), "
                                   "in a vLLM server ragtune starts (--engine vllm), or behind --url (a `ragtune "
                                   "serve` or a vLLM server already running).")
    p.add_argument("question")
    p.add_argument("--variant", default="rag", help="base | rag | ft | ft+rag, optionally ':ADAPTER' (default: rag)")
    p.add_argument("--adapter", help="adapter for ft / ft+rag (default: the workspace's newest)")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("-k", type=int, help="passages to retrieve (default: workspace setting, else 4)")
    add_sampling_args(p)
    add_engine_args(p)
    add_workspace_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_ask)

    p = sub.add_parser("serve", help="serve the workspace's assistants over an OpenAI-compatible API",
                       description="Start the chosen engine and an OpenAI-compatible /v1/chat/completions where "
                                   "`model` names a variant: base, rag, ft:<adapter>, ft+rag:<adapter>.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port of the ragtune API (default: %(default)s)")
    add_engine_args(p)
    add_workspace_arg(p)
    p.set_defaults(func=_serve)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256, help="longest answer in tokens (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, repeatable (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("embedded", "vllm"), default="embedded",
                   help="embedded: transformers in this process (default); vllm: a vLLM server")
    g.add_argument("--model", default=DEFAULT_LLM, help="base model (default: %(default)s; e.g. tiny-llama, a folder)")
    g.add_argument("--url", help="use a server already running at this URL (vLLM, or for `ask` a `ragtune serve`)")
    g.add_argument("--max-model-len", type=int, help="context window in tokens (default 2048)")
    g.add_argument("--dtype", help="float32 (CPU default), bfloat16, float16 or auto")
    v = p.add_argument_group("vLLM pass-through (options of vLLM itself, for --engine vllm)")
    v.add_argument("--tensor-parallel-size", type=int, help="split the model over N GPUs")
    v.add_argument("--data-parallel-size", type=int, help="N replicas of the model behind one endpoint")
    v.add_argument("--gpu-memory-utilization", type=float, help="share of GPU memory vLLM may take")
    v.add_argument("--max-loras", type=int, help="adapters served in one batch (default 4)")
    v.add_argument("--max-lora-rank", type=int, help="largest LoRA rank accepted (default 64)")
    v.add_argument("--kv-cache-gib", type=float, help="CPU only: KV cache size, VLLM_CPU_KVCACHE_SPACE (default 1)")
    v.add_argument("--vllm-port", type=int, help="port of the vLLM server ragtune starts (default: a free one)")
    v.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                   help="any other vLLM option, repeatable: --vllm-arg=--enable-prefix-caching")


def engine_from_args(args) -> Engine:
    """The engine the engine flags (``add_engine_args``) name, built by the composition root."""
    spec = EngineSpec.from_args(args)
    if spec.starts_a_server:
        print(f"starting a vLLM server for {spec.model} (about a minute on CPU) ...", file=sys.stderr, flush=True)
    return build_engine(spec)


def _sampling(args) -> SamplingOptions:
    return SamplingOptions(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)


# ------------------------------------------------------------------ ask

def _ask(args) -> int:
    options = _sampling(args)
    if args.url and _is_ragtune_server(args.url):
        result = _ask_remote(args, options)
    else:
        result = _ask_local(args, options)
    if args.json:
        print_json(result)
    else:
        if not args.stream:
            print(result["answer"])
        _print_sources(result)
    return 0


def _ask_local(args, options) -> dict:
    assistant = build_assistant(open_workspace(args), engine_from_args(args))
    if args.stream:
        answer = None
        for item in assistant.stream(args.question, args.variant, adapter=args.adapter, options=options, k=args.k):
            if isinstance(item, Answer):
                answer = item
            elif not args.json:
                sys.stdout.write(item)
                sys.stdout.flush()
        if not args.json:
            sys.stdout.write("\n")
    else:
        answer = assistant.answer(args.question, args.variant, adapter=args.adapter, options=options, k=args.k)
    d = answer.to_dict()
    d["answer"] = d.pop("text")
    return {key: d.get(key) for key in ASK_KEYS}


def _is_ragtune_server(url: str) -> bool:
    import httpx  # only `ask --url` talks HTTP; every other command starts without it

    try:
        r = httpx.get(url.rstrip("/") + "/health", timeout=5)
        return r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json") \
            and "ragtune" in r.json()
    except (httpx.HTTPError, ValueError):
        return False


def _ask_remote(args, options) -> dict:
    """Ask a running `ragtune serve` through its OpenAI-compatible API, with the openai client (its stream
    reader too); a failure is one sentence: the server's own message, or that the server did not answer."""
    import openai  # about 1 s to import, for `ask --url` alone: every other command starts without it

    variant, named = parse_variant(args.variant)
    request = {"model": format_variant(variant, named or args.adapter),
               "messages": [{"role": "user", "content": args.question}], "max_tokens": options.max_tokens,
               "temperature": options.temperature, "top_p": options.top_p}
    if options.seed is not None:
        request["seed"] = options.seed
    if args.k:
        request["extra_body"] = {"ragtune": {"k": args.k}}
    client = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key="not-needed-on-loopback", max_retries=0,
                           timeout=600)
    start = time.perf_counter()
    try:
        if not args.stream:
            reply = client.chat.completions.create(**request)
            text, extra, usage = reply.choices[0].message.content or "", _ragtune_extra(reply), reply.usage
        else:
            text, extra, usage = "", {}, None
            with client.chat.completions.create(**request, stream=True,
                                                stream_options={"include_usage": True}) as stream:
                for chunk in stream:
                    for choice in chunk.choices:
                        delta = choice.delta.content or ""
                        text += delta
                        if delta and not args.json:
                            sys.stdout.write(delta)
                            sys.stdout.flush()
                    extra = _ragtune_extra(chunk) or extra
                    usage = chunk.usage or usage
            if not args.json:
                sys.stdout.write("\n")
    except openai.APIConnectionError as exc:  # refused, reset, timed out
        raise ServerUnavailableError(f"The ragtune server at {args.url} did not answer "
                                     f"({exc.__cause__ or exc}).") from None
    except openai.APIStatusError as exc:  # an HTTP error status: the server's OpenAI-shaped error says why
        raise (ServerUnavailableError if exc.status_code >= 500 else BadInputError)(
            _error_message(exc.body) or f"The server answered HTTP {exc.status_code}.") from None
    except openai.APIError as exc:  # an error event inside a stream that had started
        raise BadInputError(_error_message(exc.body) or exc.message) from None
    finally:
        client.close()
    return {"answer": text, "variant": extra.get("variant", variant), "adapter": extra.get("adapter"),
            "citations": extra.get("citations", []), "latency_s": extra.get("latency_s", time.perf_counter() - start),
            "ttft_s": extra.get("ttft_s"), "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None, "model": extra.get("model"),
            "engine": extra.get("engine")}


def _ragtune_extra(reply) -> dict:
    """The ``ragtune`` field (citations, variant, timings) that the server adds to a completion or chunk."""
    return (reply.model_extra or {}).get("ragtune") or {}


def _error_message(body) -> str | None:
    """The message of an OpenAI-shaped error body (the client hands over its ``error`` object)."""
    return body.get("message") if isinstance(body, dict) else None


def _print_sources(result: dict) -> None:
    if result.get("citations"):
        print("\nSources:")
        for c in result["citations"]:
            print(f"  [{c['n']}] {c['citation']}" + (f" ({c['section']})" if c.get("section") else ""))
    latency = result.get("latency_s")
    if latency is not None:
        print(f"\n{result.get('variant')}" + (f":{result['adapter']}" if result.get("adapter") else "")
              + f" on {result.get('model')} ({result.get('engine')}), {latency:.1f} s", file=sys.stderr)


# ------------------------------------------------------------------ serve

def _serve(args) -> int:
    import uvicorn  # the server itself, only for this command

    ws = open_workspace(args)
    engine = engine_from_args(args)
    # Only the names this address answers to (and $RAGTUNE_ALLOWED_HOSTS): a page that rebinds its own
    # name to this address gets 421, not the workspace's models and answers.
    app = build_app(ws, engine, assistant=build_assistant(ws, engine), hosts=allowed_hosts(args.host))
    print(f"ragtune serving workspace '{ws.name}' with {engine!r} on http://{args.host}:{args.port}/v1 "
          "(model = base | rag | ft:<adapter> | ft+rag:<adapter>)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        close_engine(engine)
    return 0
