"""Evaluation as one use case: one config, validated once, run in this process or as a job.

``ragtune eval`` runs ``evaluate`` in its own process; the UI and ``ragtune eval --detach`` start
``EVAL``, an operation of the one job runner (``ragtune.operations``), whose job process runs the same
``evaluate``: a page reload or another browser finds the job from the workspace's ``jobs/`` folder,
cancel stops it keeping every answer, and resume restarts it under the same run id so only the
missing answers are computed. CLI flags are derived from ``EvalConfig`` (``ragtune.config_args``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ragtune.adapters import get_adapter
from ragtune.atomic import atomic_write_bytes, atomic_write_jsonl
from ragtune.errors import BadInputError
from ragtune.job_events import JobProgress, QuestionsLoaded, last_of
from ragtune.models import DEFAULT_LLM
from ragtune.operations import Operation
from ragtune.paths import repo_datasets_dir
from serving.engine import DEFAULT_FREQUENCY_PENALTY, SamplingOptions
from serving.factory import get_engine

from . import store
from .assistants import make_assistant
from .judge import JudgeConfig
from .qa_sets import held_out_rows, load_qa_file
from .runner import KINDS, list_runs, load_run, new_run_id, parse_variant, resolve_variants, run_eval, summarize

JOB_KIND = "eval"
HELD_OUT = "held-out"
SAMPLE = "sample"
ENGINES = ("embedded", "vllm")
# Questions in flight on vLLM: its batches grow to this, and decoding 32 answers at once costs little
# more per step than one on a CPU (each step reads every weight once). A RAG prompt holds up to ~1,300
# tokens, so 32 need up to ~45k tokens of KV cache: the 2 GiB below hold ~55k for Gemma 3 270M in float32.
VLLM_IN_FLIGHT = 32
VLLM_KV_CACHE_GIB = 2
# vLLM accepts these maximum LoRA ranks; its CPU LoRA kernels copy a max-rank weight slice per token,
# so a server sized to the adapters evaluated (ragtune trains rank 16) runs them up to 4x cheaper than one
# sized for rank 64.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class EvalConfig:
    """What an evaluation answers, with what, and how long the answers may be."""

    qa: str = field(default=HELD_OUT, metadata={"help": (
        "test set: JSONL/CSV with question, answer (or truth/reference), optional doc, page; 'held-out' (the test "
        "split of the newest generated training set) or 'sample' (the Lumora demo questions)")})
    variants: str = field(default="base,rag", metadata={"help": (
        "comma-separated: base, rag, ft, ft+rag (ft:ADAPTER names an adapter)")})
    adapter: str | None = field(default=None, metadata={"help": "adapter for ft / ft+rag (default: the newest)"})
    engine: str = field(default="embedded", metadata={"choices": ENGINES, "help": (
        "embedded: transformers in this process; vllm: one vLLM server answering several questions at once")})
    model: str | None = field(default=None, metadata={"help": "base model (default: gemma-3-270m)"})
    url: str | None = field(default=None, metadata={"help": "use a vLLM server already running at this URL"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N questions"})
    max_tokens: int = field(default=256, metadata={"help": "longest answer in tokens"})
    frequency_penalty: float = field(default=DEFAULT_FREQUENCY_PENALTY, metadata={"help": (
        "lowers each token's score by this times its count in the answer so far (OpenAI's frequency "
        "penalty; 0 = none): fewer answers that loop on a phrase")})
    k: int | None = field(default=None, metadata={"help": "passages retrieved per question (default: the workspace "
                                                          "setting)"})
    judge_url: str | None = field(default=None, metadata={"help": (
        "OpenAI-compatible endpoint for an optional LLM judge (e.g. http://127.0.0.1:8001/v1)")})
    judge_model: str | None = field(default=None, metadata={"help": "model name at the judge endpoint"})

    def __post_init__(self):
        if not isinstance(self.variants, str):
            self.variants = ",".join(self.variants)
        self.qa = str(self.qa or HELD_OUT)
        if self.qa in ("heldout", "test-split"):
            self.qa = HELD_OUT

    @property
    def variant_list(self) -> list[str]:
        return [v.strip() for v in self.variants.split(",") if v.strip()]

    def validate(self) -> "EvalConfig":
        if not self.variant_list:
            raise BadInputError("Pick at least one variant to evaluate: base, rag, ft or ft+rag.")
        for v in self.variant_list:
            parse_variant(v)
        if self.engine not in ENGINES:
            raise BadInputError(f"Unknown engine '{self.engine}': use embedded or vllm.")
        if self.url and self.engine != "vllm":
            raise BadInputError("--url names a vLLM server: use it with --engine vllm.")
        if bool(self.judge_url) != bool(self.judge_model):
            raise BadInputError("An LLM judge needs both --judge-url and --judge-model.")
        if self.max_tokens < 1:
            raise BadInputError(f"--max-tokens must be at least 1 (got {self.max_tokens}).")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise BadInputError(f"--frequency-penalty must be between -2 and 2 (got {self.frequency_penalty}).")
        if self.limit is not None and self.limit < 0:
            raise BadInputError(f"--limit must be 0 (all) or more (got {self.limit}).")
        return self

    @property
    def retrieves(self) -> bool:
        return any(v.split(":")[0].strip().lower().endswith("rag") for v in self.variant_list)

    @property
    def concurrency(self) -> int:
        """vLLM batches concurrent requests; the embedded engine answers one at a time."""
        return VLLM_IN_FLIGHT if self.engine == "vllm" else 1

    def sampling_options(self):
        return SamplingOptions(max_tokens=self.max_tokens, frequency_penalty=self.frequency_penalty)

    def judge(self):
        return JudgeConfig(self.judge_url, self.judge_model) if self.judge_url else None

    def to_dict(self) -> dict:
        return asdict(self)


def sample_questions_path() -> Path:
    return repo_datasets_dir() / "sample_qa.jsonl"


def load_questions(ws, config: EvalConfig) -> tuple[list[dict], list[tuple[int, str]], str]:
    """(rows, skipped lines, source label) for the config's test set, cut to ``limit``."""
    if config.qa == HELD_OUT:
        rows, source = held_out_rows(ws)
        errors = []
    else:
        path = sample_questions_path() if config.qa == SAMPLE else Path(config.qa)
        rows, errors = load_qa_file(path)
        source = SAMPLE if config.qa == SAMPLE else path.name
        if not rows:
            first = f" First problem: line {errors[0][0]}: {errors[0][1]}" if errors else ""
            raise BadInputError(f"No usable questions in {path.name}.{first}")
    if config.limit:
        rows = rows[: config.limit]
    return rows, errors, source


def evaluation_engine(config: EvalConfig, ws=None):
    """The engine the config names. A vLLM server ragtune starts is sized for the evaluation: KV cache
    for ``VLLM_IN_FLIGHT`` RAG prompts and LoRA rank for the workspace's adapters that it evaluates."""
    options = {}
    if config.engine == "vllm" and not config.url:
        options = {"kv_cache_gib": VLLM_KV_CACHE_GIB}
        if ws is not None:
            options["max_lora_rank"] = _lora_rank_needed(ws, config)
    return get_engine(config.engine, model=config.model or DEFAULT_LLM, url=config.url, **options)


def _lora_rank_needed(ws, config: EvalConfig) -> int:
    """The smallest rank vLLM accepts that holds every adapter the ft variants use (16 when none)."""
    rank = 16
    ft = [v for v in config.variant_list if v.split(":")[0].strip().lower().startswith("ft")]
    for variant in resolve_variants(ws, ft, config.adapter) if ft else []:
        try:
            lora = json.loads((Path(get_adapter(ws, variant["adapter"]).path) / "adapter_config.json").read_text())
        except (OSError, ValueError):
            continue  # the run itself reports a missing adapter, in a sentence
        rank = max([rank, int(lora.get("r") or 0), *map(int, (lora.get("rank_pattern") or {}).values())])
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def evaluate(ws, config: EvalConfig, *, run_id: str | None = None, resume: bool = False, progress=None,
             engine=None, assistant=None, on_loaded=None):
    """Run (or, with ``resume``, finish) an evaluation in this process; returns the EvalRun.

    ``engine``/``assistant`` let a caller that already holds a model (the app) share it.
    ``on_loaded(rows, skipped, source)`` hears what the test set held before any answer.
    """
    config.validate()
    rows, errors, source = (None, [], "")
    if resume and run_id:
        store.open_store(ws)
        resume = store.get_run_record(ws, run_id) is not None  # cancelled before its first answer: start it
    if not resume:
        rows, errors, source = load_questions(ws, config)
    if on_loaded:
        on_loaded(rows, errors, source)
    engine = engine or evaluation_engine(config, ws)
    if assistant is None:
        assistant = make_assistant(ws, engine)
    if config.retrieves:
        assistant.retriever  # noqa: B018 - "build the index first" before any answer is generated
    return run_eval(ws, rows, config.variant_list, engine, adapter=config.adapter, progress=progress,
                    run_id=run_id or new_run_id(), judge=config.judge(), assistant=assistant,
                    options=config.sampling_options(), k=config.k, source=source, concurrency=config.concurrency,
                    model=config.model)


# ------------------------------------------------------------------ as a job


@dataclass
class EvalJobConfig(EvalConfig):
    """An evaluation run as a job of the one job runner: the config, and the run it computes."""

    run_id: str | None = field(default=None, metadata={"help": (
        "the run this job computes, and the job's id (set when the job starts; a resume keeps it)")})
    rows: list | None = field(default=None, metadata={"help": (
        "questions typed in (question, answer, ...): written to a file of the workspace before the job starts, "
        "so a resume days later still finds them")})

    @classmethod
    def of(cls, config: EvalConfig, *, rows: list | None = None) -> "EvalJobConfig":
        """The job of an evaluation config (``rows``: questions typed in rather than a file)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(EvalConfig)}, rows=rows)

    def eval_config(self) -> EvalConfig:
        return EvalConfig(**{f.name: getattr(self, f.name) for f in fields(EvalConfig)})


def _prepare_job(ws, config: EvalJobConfig) -> EvalJobConfig:
    """Give the run its id and keep its questions in the workspace; a bad file or no held-out split fails
    here, in a sentence, not in the job."""
    config.run_id = config.run_id or new_run_id()
    if config.rows is not None:
        config.qa = str(atomic_write_jsonl(ws.path("evals", f"{config.run_id}.jsonl"), config.rows))
        config.rows = None
    elif config.qa not in (HELD_OUT, SAMPLE):
        source = Path(config.qa)
        if not source.is_file():
            raise BadInputError(f"Test set not found: {source}.")
        kept = ws.path("evals", f"{config.run_id}-{source.name}")
        atomic_write_bytes(kept, source.read_bytes())
        config.qa = str(kept)
    load_questions(ws, config.eval_config())
    return config


def _evaluate_job(ws, config: EvalJobConfig, job) -> dict:
    """The job's work: compute the run, or on a resume only its missing answers (``evaluate`` tells which)."""
    def loaded(rows, skipped, source):
        job.emit(QuestionsLoaded(rows=len(rows) if rows is not None else None, source=source,
                                 skipped=[{"line": ln, "reason": r} for ln, r in skipped]))

    run = evaluate(ws, config.eval_config(), run_id=config.run_id, resume=True, progress=job.progress,
                   on_loaded=loaded)
    return {"run_id": run.run_id, "computed": run.computed, "cached": run.cached, "engine": run.config.get("engine"),
            "recommendation": run.summary["recommendation"]}


# One evaluation at a time per workspace: two would share the CPU and each take twice as long. Its job id is
# its run id; cancel keeps every answer, and resume computes only the missing ones.
EVAL = Operation(kind=JOB_KIND, config=EvalJobConfig, work=_evaluate_job, prepare=_prepare_job,
                 job_id=lambda config: config.run_id, title="an evaluation",
                 legacy_config=lambda stored: {**stored["eval"], "run_id": stored["run_id"]})


@dataclass
class EvaluationProgress(JobProgress):
    """A job's progress (done/total answers, rate, ETA) and the lines of its question file that were skipped."""

    skipped: int = 0
    questions: int | None = None  # rows read from the file, once loaded


def evaluation_progress(job) -> EvaluationProgress:
    """Where an evaluation job stands, from its log (for any screen)."""
    progress = JobProgress.of_job(job)
    loaded = last_of(progress.events, QuestionsLoaded) or QuestionsLoaded()
    return EvaluationProgress(**vars(progress), skipped=len(loaded.skipped), questions=loaded.rows)


def suggested_variant(ws, default: str = "rag") -> str:
    """What to publish: the variant the newest finished evaluation recommended, else ``default``.

    The Deploy screen preselects it; `ragtune eval` and `ragtune deploy` print it.
    """
    run_id = next((r["run_id"] for r in list_runs(ws) if r["status"] == "succeeded"), None)
    if run_id is None:
        return default
    run = load_run(ws, run_id)
    rec = (run.summary or summarize(run)).get("recommendation") or {}
    kind = str(rec.get("choice") or "").partition(":")[0]
    return kind if kind in KINDS and kind != "base" and rec.get("verdict") != "neither" else default
