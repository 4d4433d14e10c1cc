"""The composition root of the assistants: the engine, the workspace's retriever and the Assistant on them.

serving (the engine, the Assistant) and retrieval (the index, the RAG prompt) never import each other; this
is where they meet, for the chat tab, `ragtune ask`, `ragtune serve` and the deploy app
(``app.wiring.servers``). An evaluation's own process builds the same assistant in
``evaluation/assistants.py``, as evaluation sits below the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ragtune.errors import BadInputError
from ragtune.models import DEFAULT_LLM
from ragtune.workspace import Workspace
from retrieval.prompt import build_rag_messages
from retrieval.search import Retriever
from serving.engine import Engine
from serving.factory import get_engine
from serving.variants import Assistant

# vLLM's own options that ragtune passes through as flags of the server it starts
VLLM_FLAGS = (("tensor_parallel_size", "--tensor-parallel-size"), ("data_parallel_size", "--data-parallel-size"),
              ("gpu_memory_utilization", "--gpu-memory-utilization"))


@dataclass(frozen=True)
class EngineSpec:
    """Which engine answers and how it starts: the CLI's engine flags, the app's --engine/--model/--url."""

    kind: str = "embedded"  # "embedded": transformers in this process; "vllm": a vLLM server
    model: str = DEFAULT_LLM
    url: str | None = None  # a server already running there: its settings are its own
    max_model_len: int | None = None  # context window in tokens (the engine's default: 2048)
    dtype: str | None = None  # float32 (CPU default), bfloat16, float16 or auto
    vllm_args: tuple[str, ...] = ()  # any other vLLM option, for a server ragtune starts
    max_loras: int | None = None  # adapters served in one batch
    max_lora_rank: int | None = None  # largest LoRA rank accepted
    kv_cache_gib: float | None = None  # CPU only: VLLM_CPU_KVCACHE_SPACE
    vllm_port: int | None = None  # port of the vLLM server ragtune starts (None: a free one)

    @classmethod
    def from_args(cls, args) -> "EngineSpec":
        """The spec the engine flags of ``app.commands.serving_cmds.add_engine_args`` describe."""
        extra = list(args.vllm_arg)
        for name, flag in VLLM_FLAGS:
            if getattr(args, name) is not None:
                extra += [flag, str(getattr(args, name))]
        return cls(kind=args.engine, model=args.model, url=args.url, max_model_len=args.max_model_len,
                   dtype=args.dtype, vllm_args=tuple(extra), max_loras=args.max_loras,
                   max_lora_rank=args.max_lora_rank, kv_cache_gib=args.kv_cache_gib, vllm_port=args.vllm_port)

    @property
    def starts_a_server(self) -> bool:
        return self.kind == "vllm" and not self.url

    def engine_options(self) -> dict:
        """The keyword options of ``serving.factory.get_engine`` for this spec."""
        if self.url and self.kind != "vllm":
            raise BadInputError("--url names a running server: use it with --engine vllm (or point it at "
                                "`ragtune serve`).")
        if self.url:
            return {}  # the running server's settings are its own
        options = {name: value for name, value in (("max_model_len", self.max_model_len), ("dtype", self.dtype))
                   if value}
        if self.kind == "embedded":
            if options.get("dtype") == "auto":
                options["dtype"] = "float32"
            return options
        options["extra_args"] = list(self.vllm_args)
        for name, value in (("max_loras", self.max_loras), ("max_lora_rank", self.max_lora_rank),
                            ("kv_cache_gib", self.kv_cache_gib), ("port", self.vllm_port)):
            if value:
                options[name] = value
        return options


def build_engine(spec: EngineSpec) -> Engine:
    """The process's shared engine for ``spec`` (loaded, or its vLLM server started, on first use)."""
    return get_engine(spec.kind, model=spec.model, url=spec.url, **spec.engine_options())


def build_assistant(ws: Workspace, engine: Engine) -> Assistant:
    """The Assistant of `ws` on `engine`. Its retriever is the workspace's, looked up per rag question from
    the library's cache (``Retriever.for_workspace``: reopened when the index is rebuilt; "build the index
    first" when there is none); base and ft need no index."""
    return Assistant(ws, engine, prompt_builder=build_rag_messages, open_retriever=partial(Retriever.for_workspace, ws))
