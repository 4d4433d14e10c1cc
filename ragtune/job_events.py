"""The rows of a job's ``log.jsonl`` as typed events, and the one place that says each in words.

Every long operation writes its log through these dataclasses (``JobReporter.emit``) and every reader
(``ragtune jobs show -f``, the Build and Documents screens, the next-round loop) reads them back with
``read_events``; ``event.describe()`` is the single sentence a person sees for it, on a terminal or a page.

A row on disk stays a flat JSON object with an ``"event"`` name, as logs written before this module were:
``parse_event`` reads those too. Step rows (``Progress``, ``TrainingStep``) carry no name, because the
training loop writes one per logged step and older readers pick them out by their ``step`` key. Keys an
event does not declare are kept in ``extra`` and written back unchanged, so a newer writer's row survives
an older reader.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar



@dataclass
class JobEvent:
    """One row of a job log. ``name`` is its ``"event"`` value on disk (None: a step row)."""

    name: ClassVar[str | None] = None
    said: ClassVar[str | None] = None  # what a person reads, formatted with the event's fields (str.format)
    time: float | None = None
    extra: dict = field(default_factory=dict)

    def to_row(self) -> dict:
        row = {} if self.name is None else {"event": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:  # readers use .get: an absent key reads as None
                row[f.name] = value
        return {**row, **self.extra}

    def describe(self) -> str | None:
        """The line a person reads for this event (None: nothing to say beyond the progress bar)."""
        return None if self.said is None else self.said.format(**vars(self))


@dataclass
class Progress(JobEvent):
    """Work done so far, with its rate and ETA (measured by ``ProgressMeter``)."""

    step: int = 0
    total_steps: int | None = None
    label: str = ""
    elapsed_s: float | None = None
    rate: float | None = None
    eta_s: float | None = None


@dataclass
class TrainingStep(Progress):
    """A logged training step: losses, throughput and memory, from the trainer's own logs."""

    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None  # training throughput: tokens seen per second of training
    memory_mb: float | None = None
    peak_memory_mb: float | None = None

    def describe(self) -> str | None:
        if self.eval_loss is None:
            return None
        return f"epoch {self.epoch or 0:.2f}: eval loss {self.eval_loss:.4f}"


@dataclass
class OperationStarted(JobEvent):
    name: ClassVar[str] = "start"
    operation: str = ""
    config: dict = field(default_factory=dict)


@dataclass
class Ended(JobEvent):
    name: ClassVar[str] = "end"
    status: str = ""
    error: str | None = None


@dataclass
class Sentence(JobEvent):
    """An event that is a sentence the work wrote (its kind says how it is introduced)."""

    said: ClassVar[str] = "{message}"
    message: str = ""


def _kind(class_name: str, name: str, said: str | None, doc: str, base: type = JobEvent, **fields) -> type:
    """An event kind that needs no code of its own: its name on disk, its sentence (``said``, formatted with
    its fields; None: the progress bar says it), what it is, and its fields as ``name=(type, default)``."""
    return dataclasses.make_dataclass(
        class_name, [(f, kind, field(default=default)) for f, (kind, default) in fields.items()], bases=(base,),
        namespace={"name": name, "said": said, "__doc__": doc, "__module__": __name__})


JobWarning = _kind("JobWarning", "warning", "warning: {message}", "Something the user should know.", Sentence)
Message = _kind("Message", "message", "{message}",
                "A step of a job that has no count yet (the next round says what it is doing).", Sentence)
Measuring = _kind("Measuring", "measuring", "measuring: {message}",
                  "Training is timing candidate settings before it plans.", Sentence)
RoundStarted = _kind("RoundStarted", "round", "round {round_id}: fine-tune job {train_job}",
                     "A next round started its fine-tune.", round_id=(str, ""), train_job=(str, ""))


@dataclass
class FileIngested(JobEvent):
    """One file's outcome in an ingest (the fields of ``retrieval.ingest.FileResult`` are in ``extra``)."""

    name: ClassVar[str] = "file"


@dataclass
class QuestionsLoaded(JobEvent):
    """An evaluation read its test set: how many questions, from where, and the lines it skipped."""

    name: ClassVar[str] = "loaded"
    rows: int | None = None
    source: str = ""
    skipped: list = field(default_factory=list)

    def describe(self) -> str:
        said = f"{self.rows} questions" if self.rows is not None else "the stored questions"
        return f"loaded {said}" + (f" from {self.source}" if self.source else "") + (
            f"; skipped {len(self.skipped)} unreadable lines" if self.skipped else "")


# ------------------------------------------------------------------ training


@dataclass
class TrainingStarted(JobEvent):
    """What is trained on what, once the data and the plan are settled."""

    name: ClassVar[str] = "training_start"
    method: str = ""
    method_label: str = ""
    base_model: str = ""
    dataset: str = ""
    data_hash: str = ""
    train_rows: int = 0
    validation_rows: int = 0
    device: str = ""
    resume_checkpoint: str | None = None

    def describe(self) -> str:
        return (f"{self.method_label} on {self.device}: {self.train_rows} training rows"
                + (f", resuming from {self.resume_checkpoint}" if self.resume_checkpoint else ""))


@dataclass
class SkippedRows(JobEvent):
    name: ClassVar[str] = "skipped_rows"
    count: int = 0
    lines: list = field(default_factory=list)

    def describe(self) -> str:
        return f"skipped {self.count} malformed rows: {self.lines[:5]}"


@dataclass
class SequenceLength(JobEvent):
    name: ClassVar[str] = "sequence_length"
    max_length: int = 0
    auto: bool = False
    longest_row: int = 0
    truncated_rows: int = 0

    def describe(self) -> str:
        return (f"sequences of {self.max_length} tokens" + (" (auto)" if self.auto else "")
                + f"; longest row {self.longest_row} tokens")


@dataclass
class PrecisionProbe(JobEvent):
    """One candidate precision/thread setting timed on a few real steps."""

    name: ClassVar[str] = "precision_probe"
    setting: str = ""
    step_s: float | None = None
    tokens_per_s: float | None = None
    stopped: str | None = None

    def describe(self) -> str:
        return f"  {self.setting}: " + (f"{self.tokens_per_s} tokens/s" if self.tokens_per_s
                                         else self.stopped or "stopped early")


@dataclass
class PrecisionChosen(JobEvent):
    name: ClassVar[str] = "precision"
    bf16: bool = False
    threads: int | None = None
    label: str = ""
    tokens_per_s: float | None = None
    reason: str | None = None

    def describe(self) -> str:
        threads = f", {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return f"precision: {self.label}{threads} ({self.reason})"


@dataclass
class PlanMade(JobEvent):
    """The training plan: rows, steps and expected time (the plan's other figures are in ``extra``)."""

    name: ClassVar[str] = "plan"
    summary: str = ""
    left_out: dict | None = None

    def describe(self) -> str:
        left = self.left_out or {}
        if not left.get("rows"):
            return self.summary
        kept = left.get("documents_without_rows")
        return (f"{self.summary}\nleft out to fit the budget: {left['rows']} rows ({left.get('facts')} facts)"
                + (f"; documents with no rows kept: {', '.join(kept)}" if kept else ""))


TrainingEnded = _kind("TrainingEnded", "train_end", None, "The trainer's summary of the whole run.", TrainingStep,
                      train_loss=(float | None, None), train_runtime=(float | None, None))
TrainingBegan = _kind("TrainingBegan", "train_begin", None, "The trainer took its first step (of a resume: its step).",
                      step=(int, 0), total_steps=(int | None, None), resumed_from_step=(int | None, None))
BudgetStop = _kind("BudgetStop", "budget_stop", "{message}",
                   "Training stopped early to stay within its time budget (the machine ran slower than measured).",
                   Sentence, step=(int, 0), total_steps=(int | None, None))
EarlyStop = _kind("EarlyStop", "early_stop",
                  "stopped early at step {step}: validation loss no longer improved (best {best_eval_loss})",
                  "Validation loss stopped improving for `early_stopping_patience` evaluations.",
                  step=(int, 0), best_eval_loss=(float | None, None))
CheckpointSaved = _kind("CheckpointSaved", "checkpoint", "checkpoint saved at step {step} ({reason})",
                        "A checkpoint of the last finished step (a cancel saves one, so a resume goes on from it).",
                        step=(int, 0), reason=(str, ""))
AdapterSaved = _kind("AdapterSaved", "saved", "adapter '{adapter}' saved at {path}",
                     "The trained adapter is registered in the workspace, ready to serve.",
                     adapter=(str, ""), path=(str, ""), wall_s=(float | None, None))


_NAMED = {cls.name: cls for cls in (
    TrainingEnded, OperationStarted, Ended, JobWarning, Message, FileIngested, QuestionsLoaded, RoundStarted,
    TrainingBegan, TrainingStarted, SkippedRows, SequenceLength, Measuring, PrecisionProbe, PrecisionChosen,
    PlanMade, BudgetStop, EarlyStop, CheckpointSaved, AdapterSaved)}
_TRAINING_KEYS = {"loss", "eval_loss", "epoch"}


def _event_class(row: dict) -> type[JobEvent]:
    name = row.get("event")
    if name is None:
        return TrainingStep if _TRAINING_KEYS & row.keys() else Progress if "step" in row else JobEvent
    if name == "start" and "operation" not in row:
        return TrainingStarted  # training logs written before it had a name of its own
    return _NAMED.get(name, JobEvent)


def parse_event(row: dict) -> JobEvent:
    """The typed event of a log row; a row of an unknown kind becomes a plain ``JobEvent`` keeping every key."""
    cls = _event_class(row)
    declared = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in row.items() if k in declared}
    extra = {k: v for k, v in row.items() if k not in declared and k != "event"}
    if cls is JobEvent and row.get("event") is not None:
        extra = {"event": row["event"], **extra}  # written back as it was read
    try:
        return cls(**known, extra=extra)
    except TypeError:  # a field of the wrong shape: keep the row readable rather than lose it
        return JobEvent(time=row.get("time"), extra=dict(row))


def read_log(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Rows appended to a JSONL log since byte `offset`, and the new offset (tail -f)."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written stays for next time
    rows = []
    for line in data[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows, offset + end


def read_events(path: Path, offset: int = 0) -> tuple[list[JobEvent], int]:
    """The events appended to a job log since ``offset``, and the offset to read on from."""
    rows, offset = read_log(path, offset)
    return [parse_event(r) for r in rows], offset


def of_type(events, cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def last_of(events, cls: type):
    return next((e for e in reversed(events) if isinstance(e, cls)), None)


@dataclass
class JobProgress:
    """Where a job stands, from its events: the one summary every screen and command shows."""

    done: int = 0
    total: int = 0
    label: str = ""
    rate: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    events: list = field(default_factory=list)

    @classmethod
    def of(cls, events: list[JobEvent]) -> "JobProgress":
        last = last_of(events, Progress) or Progress()
        return cls(done=last.step or 0, total=last.total_steps or 0, label=last.label, rate=last.rate,
                   eta_s=last.eta_s, elapsed_s=last.elapsed_s, events=events)

    @classmethod
    def of_job(cls, job) -> "JobProgress":
        return cls.of(read_events(job.log_path)[0] if job is not None else [])

    @property
    def warnings(self) -> list[str]:
        return [e.message for e in of_type(self.events, JobWarning)]


class ProgressMeter:
    """The one rate and ETA computation of every job: work per second since this process's first reading.

    Counting from the first reading, not from zero, keeps a resumed job's rate true: the work done before
    the restart took no time in this process. ``elapsed_before`` carries the time earlier processes spent
    (training adds its previous runs'); ``clock`` is injected by tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, elapsed_before: float = 0.0):
        self.clock = clock
        self.elapsed_before = elapsed_before
        self.started = clock()
        self._first: int | None = None

    def restart(self, done: int = 0) -> None:
        """Count from now and from ``done`` (training: once the model is loaded and the first step begins)."""
        self.started, self._first = self.clock(), done

    def reading(self, done: int, total: int | None, label: str = "") -> Progress:
        if self._first is None:
            self._first = done
        elapsed = self.clock() - self.started
        fresh = done - self._first
        rate = fresh / elapsed if elapsed > 0 and fresh > 0 else None
        return Progress(step=done, total_steps=total, label=label, elapsed_s=round(self.elapsed_before + elapsed, 1),
                        rate=round(rate, 3) if rate else None,
                        eta_s=round((total - done) / rate, 1) if rate and total else None)
