"""Ingest and index as operations: one config each, validated once, run as a job (``ragtune.operations``).

``ragtune ingest`` / ``ragtune index`` run them in their own process (flags derived from
``IngestConfig`` / ``IndexConfig``); the Documents and Build screens start them as jobs and show
their progress, which a page reload finds again. Cancel stops an index build between batches
(the current index stays, every vector embedded so far is kept) and an ingest between files;
resume runs the same config again: the build embeds only what is missing, the ingest stores only
the files not stored yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragtune.errors import BadInputError, RagtuneError
from ragtune.ingest_gate import IngestLimits, UploadLimits, remove_staging
from ragtune.job_events import FileIngested, OperationStarted, of_type, read_events
from ragtune.operations import Operation

from .evaluate import load_qa
from .index import build_index
from .ingest import ingest_paths
from .settings import load_settings, save_settings


@dataclass
class IngestConfig:
    """Which files or folders to add, the limits each file must pass, and whether to index afterwards."""

    paths: list[str] = field(default_factory=list, metadata={"cli": False})
    max_file_mb: float | None = field(default=None, metadata={"help": "refuse files larger than this (default 200)"})
    max_pages: int | None = field(default=None, metadata={"help": "refuse PDFs/slides with more pages (default 5000)"})
    parse_memory_mb: float | None = field(default=None, metadata={
        "help": "memory one file may take while it is parsed, in a child process stopped past it (default 2048)"})
    parse_timeout_s: float | None = field(default=None, metadata={
        "help": "seconds one file may take to parse; past it the parsing process is stopped (default 120)"})
    index: bool = field(default=False, metadata={"switch": True, "help": "build the search index afterwards"})
    # The HTTP upload's job: upload limits, all or nothing, and the index as its own job afterwards; `staged`
    # is the upload's staging folder, which this job owns and removes when it ends, however it ends.
    upload: bool = field(default=False, metadata={"cli": False})
    staged: str | None = field(default=None, metadata={"cli": False})

    def __post_init__(self):
        self.paths = [str(p) for p in self.paths]

    def validate(self) -> "IngestConfig":
        if not self.paths:
            raise BadInputError("Name at least one file or folder to add.")
        if self.max_file_mb is not None and self.max_file_mb <= 0:
            raise BadInputError(f"--max-file-mb must be above 0 (got {self.max_file_mb}).")
        if self.max_pages is not None and self.max_pages < 1:
            raise BadInputError(f"--max-pages must be at least 1 (got {self.max_pages}).")
        if self.parse_memory_mb is not None and self.parse_memory_mb < 64:
            raise BadInputError(f"--parse-memory-mb must be at least 64 (got {self.parse_memory_mb:g}).")
        if self.parse_timeout_s is not None and self.parse_timeout_s <= 0:
            raise BadInputError(f"--parse-timeout-s must be above 0 (got {self.parse_timeout_s:g}).")
        return self

    def limits(self):
        limits = UploadLimits() if self.upload else IngestLimits()
        if self.max_file_mb:
            limits.max_file_mb = self.max_file_mb
        if self.max_pages:
            limits.max_pages = self.max_pages
        if self.parse_memory_mb:
            limits.parse_memory_mb = self.parse_memory_mb
        if self.parse_timeout_s:
            limits.parse_timeout_s = self.parse_timeout_s
        return limits


@dataclass
class IndexConfig:
    """Retrieval settings to change (saved in the workspace) before the index is built; None keeps the saved one."""

    embedder: str | None = field(default=None, metadata={
        "help": "sentence-transformers model name, folder or HF id (saved in the workspace)"})
    chunk_tokens: int | None = field(default=None, metadata={"help": "chunk size in embedder tokens (saved)"})
    overlap_tokens: int | None = field(default=None, metadata={"help": "overlap between chunks in tokens (saved)"})
    k: int | None = field(default=None, metadata={"help": "passages per answer (saved)"})
    mode: str | None = field(default=None, metadata={"choices": ("hybrid", "dense", "bm25"),
                                                     "help": "search mode (saved)"})
    dense_weight: float | None = field(default=None, metadata={"help": "hybrid weight of meaning-based search (saved)"})
    bm25_weight: float | None = field(default=None, metadata={"help": "hybrid weight of keyword search (saved)"})
    qa: str | None = field(default=None, metadata={
        "help": "questions people wrote, with gold sources (JSONL/CSV, as for eval-retrieval): the fusion and "
                "passage count are chosen on them; without it the defaults stay unless generated questions are "
                "worded like people's"})

    def changes(self) -> dict:
        """The retrieval settings to save (the question file is not a setting)."""
        return {name: value for name, value in vars(self).items() if value is not None and name != "qa"}

    def validate(self) -> "IndexConfig":
        if self.k is not None and self.k < 1:
            raise BadInputError(f"k must be at least 1 (got {self.k}).")
        for name in ("dense_weight", "bm25_weight"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise BadInputError(f"{name.replace('_', ' ')} must be 0 or more (got {getattr(self, name)}).")
        return self


def _prepare_index(ws, config: IndexConfig) -> IndexConfig:
    load_settings(ws, **config.changes())  # a chunk size the workspace cannot use fails here, in a sentence
    if config.qa:
        load_qa(config.qa)  # so does an unreadable question file, before the job starts
    return config


def _index(ws, config: IndexConfig, job) -> dict:
    rows = load_qa(config.qa) if config.qa else None
    settings = save_settings(ws, **config.changes()) if config.changes() else None
    return build_index(ws, progress=job.progress, settings=settings, tuning_rows=rows)


def _ingest(ws, config: IngestConfig, job) -> dict:
    try:
        results = ingest_paths(ws, config.paths, limits=config.limits(), progress=job.progress,
                               all_or_nothing=config.upload, on_result=lambda r: job.emit(FileIngested(extra=r.to_dict())),
                               check=job.check_cancel)
    finally:
        if config.staged:
            remove_staging(ws, config.staged)
    if config.upload:  # the index as the one-at-a-time job `ragtune index` starts; its id goes in the result
        built = _start_index(ws, job) if config.index and any(r.status == "added" for r in results) else None
    else:
        built = _index(ws, IndexConfig(), job) if config.index else None
    return {"results": [r.to_dict() for r in results], "index": built}


def _start_index(ws, ingest_job) -> dict:
    """Start the index job from the registry the ingest job runs from: its id and where to follow it, or
    why it did not start (the documents are stored)."""
    try:
        job = ingest_job.operations.start(ws, INDEX, IndexConfig())
    except RagtuneError as exc:
        return {"job": None, "status": "not_started", "error": str(exc)}
    return {"job": job.id, "status": job.status, "follow": f"/builder/{ws.name}/jobs/{job.id}"}


INDEX = Operation(kind="index", config=IndexConfig, work=_index, prepare=_prepare_index, title="an index build")
# Concurrent ingests are safe (content-addressed; tests/retrieval/test_ingest_gate.py): several may run at once.
INGEST = Operation(kind="ingest", config=IngestConfig, work=_ingest, exclusive=False)


def file_results(job, latest_run: bool = False) -> list[dict]:
    """Each file's result so far, in order, from an ingest job's log (the Documents screen's rows);
    ``latest_run``: only the newest run's (a resumed job logs every file again)."""
    events = read_events(job.log_path)[0] if job is not None else []
    if latest_run:
        starts = [i for i, e in enumerate(events) if isinstance(e, OperationStarted)]
        events = events[starts[-1]:] if starts else events
    return [e.extra for e in of_type(events, FileIngested)]


def upload_pipeline(operations):
    """``start_ingest(ws, staged, paths, limits, index) -> Job`` for the builder upload route of the assistant
    server (``ragtune deploy``, the app's Deploy tab): the files the route checked and staged in `staged`
    are ingested by an ingest job (``INGEST`` of the ``operations`` registry, the app's, in a process of its
    own, as ``ragtune ingest --detach`` starts it) under upload limits, all or nothing; the job owns `staged`
    and removes it when it ends. With `index`, the job then starts the index job (``INDEX``, one at a time,
    as ``ragtune index``)."""

    def start_ingest(ws, staged, paths, limits, index: bool = False):
        config = IngestConfig(paths=[str(p) for p in paths], upload=True, staged=str(staged), index=index,
                              max_file_mb=limits.max_file_mb, max_pages=limits.max_pages,
                              parse_memory_mb=limits.parse_memory_mb, parse_timeout_s=limits.parse_timeout_s)
        return operations.start(ws, INGEST, config)

    return start_ingest
