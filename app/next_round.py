"""The next round of the loop: end-user feedback -> a new dataset version -> a fine-tune -> publish.

One call, ``start_next_round(ws)``:

1. reads the feedback not used by an earlier round (approved answers and corrections);
2. turns it into chat rows with ``training.feedback_data.rows_from_feedback``, dropping duplicates
   and every question of a test split (a question we evaluate on is never trained on);
3. writes a new dataset version: the parent version's rows plus the new ones (a correction
   replaces an older row for the same question), the parent's test split unchanged so the
   next evaluation stays comparable;
4. starts the fine-tune as a background job; with ``wait=True`` it waits for it, and with
   ``publish=True`` the new adapter becomes the live deployment (the previous version stays
   one ``rollback`` away).

Each round is recorded in the workspace (``list_rounds``) with its dataset, job, adapter and
deployment, and the feedback it consumed is marked with the round id.

``NEXT_ROUND`` is the same call as an operation (``ragtune.operations``): one ``NextRoundConfig``
(``ragtune next-round`` flags are derived from it), run in the CLI's process or as a job, with the
fine-tune's steps as its progress. Cancel stops the fine-tune too (at its last checkpoint); resume
finds the round the job started and finishes it (the fine-tune resumes from its checkpoint), since
its feedback is already spent.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

from ragtune import adapters as adapter_registry, feedback as feedback_store
from ragtune.errors import BadInputError, JobError
from ragtune.job_events import Message, RoundStarted, TrainingStep, last_of, of_type, read_events
from ragtune.jobs import JobCancelled, cancel_job, get_job
from ragtune.models import DEFAULT_LLM
from ragtune.operations import Operation
from serving.deploy import deployments
from training.config import defaults_for
from training.dataset_store import get_dataset, latest_dataset, list_datasets, save_dataset_version
from training.feedback_data import rows_from_feedback
from training.jobs import TRAIN

MIGRATIONS = [
    [
        "CREATE TABLE next_rounds (round_id TEXT PRIMARY KEY, created_at REAL NOT NULL, parent_dataset TEXT, "
        "dataset TEXT NOT NULL, job_id TEXT, adapter TEXT, base_model TEXT, variant TEXT NOT NULL, "
        "status TEXT NOT NULL, deployment_version INTEGER, stats TEXT NOT NULL DEFAULT '{}')",
    ],
]


@dataclass
class NextRoundConfig:
    """What the next round trains and whether it waits for the fine-tune and publishes it."""

    base_model: str | None = field(default=None, metadata={"flags": ("--model",), "help": (
        "base model (default: the live adapter's base model)")})
    method: str = field(default="lora", metadata={"choices": ("lora", "qlora", "full"), "help": "fine-tuning method"})
    variant: str | None = field(default=None, metadata={"choices": ("ft", "ft+rag"), "help": (
        "variant to publish (default: the live one if ft)")})
    adapter_name: str | None = field(default=None, metadata={"help": "name of the new adapter (default: the round id)"})
    epochs: float | None = field(default=None, metadata={"help": "epochs (default: per model)"})
    wait: bool = field(default=False, metadata={"switch": True, "help": "wait for the fine-tune to finish"})
    publish: bool = field(default=False, metadata={"switch": True, "help": (
        "publish the new adapter when done (implies --wait)")})

    def validate(self) -> "NextRoundConfig":
        if self.variant is not None and not self.variant.startswith("ft"):
            raise BadInputError(f"A training round publishes a fine-tuned variant ('ft' or 'ft+rag'), not '{self.variant}'.")
        if self.epochs is not None and self.epochs <= 0:
            raise BadInputError(f"epochs must be above 0 (got {self.epochs}).")
        if self.publish:
            self.wait = True
        return self


@dataclass
class NextRound:
    round_id: str
    dataset: str
    parent_dataset: str | None
    base_model: str
    variant: str
    adapter: str | None = None
    job_id: str | None = None
    status: str = "training"  # training | trained | published | failed
    deployment_version: int | None = None
    stats: dict = field(default_factory=dict)
    created_at: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _open(ws) -> None:
    ws.migrate("next_round", MIGRATIONS)


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", (text or "").lower()).strip()


def _first_user(row: dict) -> str:
    return next((m["content"] for m in row.get("messages", []) if m.get("role") == "user"), "")


def test_questions(ws) -> set[str]:
    """Every question of every dataset version's test split (normalised): never trained on."""
    questions = set()
    for version in list_datasets(ws):
        for row in version.rows("test"):
            q = row.get("question") or _first_user(row)
            if q:
                questions.add(_norm(q))
    return questions


def _parent_dataset(ws, deployment):
    if deployment is not None and deployment.dataset:
        try:
            return get_dataset(ws, deployment.dataset)
        except BadInputError:
            pass  # the adapter was trained from a file, not a dataset version
    return latest_dataset(ws)


def build_round_dataset(ws, round_id: str, deployment=None):
    """Write the new dataset version; returns (DatasetVersion, parent, used message ids, stats)."""
    pending = feedback_store.list_feedback(ws, unused_only=True)
    if not pending:
        raise BadInputError("There is no new feedback yet: end users' thumbs up and corrections on the chat page "
                            "become the next round's training rows.")
    excluded = test_questions(ws)
    new_rows = rows_from_feedback(pending, excluded)
    new_rows = [r for r in new_rows if _norm(_first_user(r)) not in excluded]  # held out, whatever the helper did
    if not new_rows:
        raise BadInputError(f"The {len(pending)} new feedback entries give no training rows (they are thumbs down "
                            "without a correction, duplicates, or questions of the test set).")
    parent = _parent_dataset(ws, deployment)
    parent_train = parent.rows("train") if parent else []
    parent_validation = parent.rows("validation") if parent else []
    parent_test = parent.rows("test") if parent else []

    merged: dict[str, dict] = {}
    for row in parent_train:
        merged[_norm(_first_user(row))] = {"messages": row["messages"]}
    replaced = 0
    for row in new_rows:
        key = _norm(_first_user(row))
        replaced += key in merged
        merged[key] = {"messages": row["messages"]}
    new_keys = {_norm(_first_user(r)) for r in new_rows}
    validation = [{"messages": r["messages"]} for r in parent_validation if _norm(_first_user(r)) not in new_keys]
    stats = {"feedback_entries": len(pending), "new_rows": len(new_rows), "replaced_rows": replaced,
             "train_rows": len(merged), "held_out_questions": len(excluded)}
    manifest = {"source": "feedback", "parent": parent.name if parent else None, "round": round_id,
                "teacher": None, "split_by": "question",
                "note": f"round {round_id}: {len(new_rows)} rows from end-user feedback", "feedback": stats}
    version = save_dataset_version(ws, {"train": list(merged.values()), "validation": validation,
                                        "test": parent_test}, manifest)
    return version, parent, [row["message_id"] for row in pending], stats


def start_next_round(ws, operations, *, base_model: str | None = None, method: str = "lora", variant: str | None = None,
                     adapter_name: str | None = None, train_overrides: dict | None = None, wait: bool = False,
                     publish: bool = False, timeout: float = 3600, progress=None) -> NextRound:
    """Feedback -> new dataset version -> training job (-> wait -> publish). Returns the round.

    ``operations`` is the job registry that starts the fine-tune (``app.wiring.OPERATIONS``)."""
    if publish and not wait:
        raise BadInputError("Publishing needs the fine-tune to finish first: pass wait=True, or call "
                            "finish_next_round() when the job is done.")
    _open(ws)
    live = deployments.current(ws)
    base_model = base_model or _base_model_of(ws, live)
    if variant is None:
        variant = live.variant if live is not None and live.variant.startswith("ft") else "ft"
    if not variant.startswith("ft"):
        raise BadInputError(f"A training round publishes a fine-tuned variant ('ft' or 'ft+rag'), not '{variant}'.")
    round_id = f"round-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    version, parent, used, stats = build_round_dataset(ws, round_id, live)
    if progress:
        progress(f"dataset {version.name}: {stats['new_rows']} new rows from {stats['feedback_entries']} feedback entries")
    config = defaults_for(base_model, method, dataset=version.name,
                          adapter_name=adapter_name or f"{round_id}"[:64], **(train_overrides or {}))
    job = operations.start(ws, TRAIN, config)
    feedback_store.mark_used(ws, used, round_id)
    record = NextRound(round_id=round_id, dataset=version.name, parent_dataset=parent.name if parent else None,
                       base_model=base_model, variant=variant, adapter=config.adapter_name, job_id=job.id,
                       stats=stats, created_at=time.time())
    _save(ws, record)
    if wait:
        return finish_next_round(ws, round_id, publish=publish, timeout=timeout, progress=progress)
    return record


def finish_next_round(ws, round_id: str, *, publish: bool = True, timeout: float = 3600, progress=None,
                      on_step=None, check=None) -> NextRound:
    """Wait for the round's fine-tune; publish its adapter when asked. Safe to call again.

    ``on_step(step, total, label)`` hears each training step; ``check()`` is called at every poll;
    either may raise to stop waiting (a cancel)."""
    record = get_round(ws, round_id)
    if record.status in ("published", "failed") or (record.status == "trained" and not publish):
        return record
    deadline = time.time() + timeout
    offset = 0
    while True:
        job = get_job(ws, record.job_id)
        if progress or on_step:
            events, offset = read_events(job.log_path, offset)
            for step in of_type(events, TrainingStep):
                if progress:
                    progress(f"step {step.step}/{step.total_steps or '?'} loss {step.loss}")
                if on_step:
                    on_step(step.step, step.total_steps, f"fine-tune of {round_id}")
        if job.finished:
            break
        if check:
            check()
        if time.time() > deadline:
            raise JobError(f"The fine-tune of {round_id} is still running after {timeout:.0f} s (job {job.id}); "
                           "call finish_next_round again later.")
        time.sleep(0.5)
    if job.status != "succeeded":
        record.status = "failed"
        record.stats["error"] = job.error
        _save(ws, record)
        raise JobError(f"The fine-tune of {round_id} {job.status}: {job.error}")
    record.adapter = (job.result or {}).get("adapter") or record.adapter
    record.status = "trained"
    if publish:
        deployment = deployments.publish(ws, record.variant, record.adapter,
                                         note=f"{round_id}: trained on {record.dataset}")
        record.deployment_version = deployment.version
        record.status = "published"
    _save(ws, record)
    return record


def _base_model_of(ws, live) -> str:
    if live is not None and live.base_model:
        return live.base_model
    known = adapter_registry.list_adapters(ws)
    return known[0].base_model if known else DEFAULT_LLM


def _save(ws, record: NextRound) -> None:
    _open(ws)
    with ws.db() as conn:
        conn.execute("INSERT OR REPLACE INTO next_rounds (round_id, created_at, parent_dataset, dataset, job_id, adapter, "
                     "base_model, variant, status, deployment_version, stats) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (record.round_id, record.created_at, record.parent_dataset, record.dataset, record.job_id,
                      record.adapter, record.base_model, record.variant, record.status, record.deployment_version,
                      json.dumps(record.stats, default=str)))


def _from_row(row) -> NextRound:
    d = dict(row)
    d["stats"] = json.loads(d.get("stats") or "{}")
    return NextRound(**d)


def get_round(ws, round_id: str) -> NextRound:
    _open(ws)
    with ws.db() as conn:
        row = conn.execute("SELECT * FROM next_rounds WHERE round_id=?", (round_id,)).fetchone()
    if row is None:
        raise BadInputError(f"No training round '{round_id}' in this workspace.")
    return _from_row(row)


def list_rounds(ws) -> list[NextRound]:
    """Rounds of the loop, newest first."""
    _open(ws)
    with ws.db() as conn:
        rows = conn.execute("SELECT * FROM next_rounds ORDER BY created_at DESC").fetchall()
    return [_from_row(r) for r in rows]


def _run_round(ws, config: NextRoundConfig, job) -> dict:
    earlier = last_of(read_events(job.job_dir / "log.jsonl")[0], RoundStarted)
    if earlier is not None:  # a resumed job: its feedback is spent, finish the round it started
        record = get_round(ws, earlier.round_id)
        train = get_job(ws, record.job_id)
        if train.status.resumable:
            job.operations.resume(ws, train.id)
    else:
        record = start_next_round(ws, job.operations, base_model=config.base_model, method=config.method,
                                  variant=config.variant, adapter_name=config.adapter_name,
                                  train_overrides={"epochs": config.epochs} if config.epochs else None,
                                  progress=lambda msg: job.emit(Message(message=msg)))
        job.emit(RoundStarted(round_id=record.round_id, train_job=record.job_id))
    if config.wait:
        try:
            record = finish_next_round(ws, record.round_id, publish=config.publish, on_step=job.progress,
                                       check=job.check_cancel)
        except JobCancelled:
            cancel_job(ws, record.job_id)  # the round's fine-tune stops with it, at a checkpoint
            raise
    return record.to_dict()


NEXT_ROUND = Operation(kind="next-round", config=NextRoundConfig, work=_run_round)
