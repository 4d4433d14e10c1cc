"""Ingest, index, synth and next round as operations: one config each, the same job folder whether the CLI
runs them in its process or the app starts them, progress rows, cancel, resume (or the reason it does not),
one at a time per workspace, and CLI flags derived from the configs."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from app.wiring import OPERATIONS
from ragtune.errors import BadInputError, JobError
from ragtune.jobs import cancel_job, get_job, list_jobs, read_log, wait_job

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "sample"
TRAIN_QA = REPO / "datasets" / "sample_train_qa.jsonl"

pytestmark = pytest.mark.timeout(300)


def _cancel_at_first_progress(ws):
    """An echo that asks for the job's cancel when the first progress row arrives: the next one stops it."""
    asked = []

    def echo(done, total, label):
        if not asked:
            job = next(j for j in list_jobs(ws) if not j.finished)
            asked.append(cancel_job(ws, job.id).id)

    return echo


def _steps(job) -> list[dict]:
    return [r for r in read_log(job.log_path)[0] if r.get("step") is not None]


def test_a_job_record_names_its_operation_by_kind_and_an_old_module_ref_still_resumes(workspace):
    """Job records keep the operation's kind, not a module the job process would import; a record written
    before, with the Operation's "module:NAME", resumes as its kind and is rewritten with the kind."""
    from ragtune.jobs import JobStatus, write_job_here
    from retrieval.documents import list_documents
    from retrieval.service import INGEST, IngestConfig

    job = OPERATIONS.run_here(workspace, INGEST, IngestConfig(paths=[str(SAMPLE / "faq.md")]))
    assert job.status == "succeeded" and job.config["operation"] == "ingest"
    assert job.argv[1:5] == ["-m", OPERATIONS.entry, "--operation", "ingest"]

    old = write_job_here(workspace, "ingest", "ragtune.operations",
                         ["--operation", "retrieval.service:INGEST"],
                         config={"operation": "retrieval.service:INGEST",
                                 "config": dataclasses.asdict(IngestConfig(paths=[str(SAMPLE / "warranty_and_support.txt")]))})
    meta = json.loads((old.dir / "job.json").read_text())
    (old.dir / "job.json").write_text(json.dumps({**meta, "pid": 2 ** 22 + 1}))  # its process is gone
    assert get_job(workspace, old.id).status == JobStatus.STOPPED
    assert OPERATIONS.refuses_resume(get_job(workspace, old.id)) is None
    resumed = wait_job(workspace, OPERATIONS.resume(workspace, old.id).id, timeout=240)
    assert resumed.status == "succeeded" and resumed.id == old.id, resumed.error
    assert resumed.config["operation"] == "ingest" and "retrieval.service:INGEST" not in resumed.argv
    assert {d["name"] for d in list_documents(workspace)} == {"faq.md", "warranty_and_support.txt"}


def test_the_registry_runs_only_its_own_operations(workspace):
    from ragtune.operations import Operation, OperationRegistry
    from retrieval.service import INDEX, INGEST, IngestConfig

    only_index = OperationRegistry([INDEX], entry=OPERATIONS.entry)
    with pytest.raises(JobError, match="not in this registry"):
        only_index.start(workspace, INGEST, IngestConfig(paths=[str(SAMPLE / "faq.md")]))
    with pytest.raises(JobError, match="No operation of kind 'ingest'"):
        only_index.get("ingest")
    with pytest.raises(ValueError, match="two operations of kind 'index'"):
        OperationRegistry([INDEX, Operation(kind="index", config=IngestConfig, work=lambda *a: {})], entry="x")
    assert set(OPERATIONS.by_kind) == {"ingest", "index", "synth", "train", "eval", "next-round"}


def test_ingest_cancelled_midway_resumes_in_a_job_process_storing_only_the_rest(workspace):
    from retrieval.documents import list_documents
    from retrieval.service import INGEST, IngestConfig, file_results

    files = [SAMPLE / "faq.md", SAMPLE / "warranty_and_support.txt", SAMPLE / "employee_handbook.md"]
    job = OPERATIONS.run_here(workspace, INGEST, IngestConfig(paths=files), echo=_cancel_at_first_progress(workspace))
    assert job.status == "cancelled" and job.kind == "ingest"
    stored_before = {d["name"] for d in list_documents(workspace)}
    assert len(stored_before) < 3
    resumed = wait_job(workspace, OPERATIONS.resume(workspace, job.id).id, timeout=240)
    assert resumed.status == "succeeded" and resumed.id == job.id, resumed.error
    assert {d["name"] for d in list_documents(workspace)} == {p.name for p in files}
    statuses = {r["name"]: r["status"] for r in resumed.result["results"]}
    assert all(statuses[name] == "duplicate" for name in stored_before)  # kept from the first run, not redone
    assert [r["name"] for r in file_results(resumed)][-3:] == [p.name for p in files]
    assert _steps(resumed)[-1]["total_steps"] == 3


def test_index_job_builds_reports_progress_and_is_one_at_a_time(workspace):
    from retrieval.index import index_state
    from retrieval.ingest import ingest_paths
    from retrieval.service import INDEX, IndexConfig

    ingest_paths(workspace, [SAMPLE / "faq.md"])
    results: list = []
    gate = threading.Barrier(2)

    def start():
        gate.wait()
        try:
            results.append(OPERATIONS.start(workspace, INDEX, IndexConfig(k=3)))
        except JobError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    jobs = [r for r in results if not isinstance(r, str)]
    refusals = [r for r in results if isinstance(r, str)]
    assert len(jobs) == 1 and len(refusals) == 1, results
    assert f"already running in workspace '{workspace.name}' ({jobs[0].id})" in refusals[0]
    assert f"ragtune jobs cancel {jobs[0].id} -w {workspace.name}" in refusals[0]
    done = wait_job(workspace, jobs[0].id, timeout=240)
    assert done.status == "succeeded", done.error
    state = index_state(workspace)
    assert state["built"] and not state["stale"] and done.result["version"] == state["manifest"]["version"]
    assert workspace.get_setting("retrieval")["k"] == 3  # the config's change is saved in the workspace
    steps = _steps(done)
    assert steps and steps[-1]["step"] == steps[-1]["total_steps"] == done.result["chunks"]
    assert json.loads(done.argv[done.argv.index("--config-json") + 1])["k"] == 3


def test_a_cancelled_index_build_keeps_the_old_index_and_resumes(workspace):
    from retrieval.index import index_state
    from retrieval.ingest import ingest_paths
    from retrieval.service import INDEX, IndexConfig

    ingest_paths(workspace, [SAMPLE / "faq.md"])
    job = OPERATIONS.run_here(workspace, INDEX, IndexConfig(), echo=_cancel_at_first_progress(workspace))
    assert job.status == "cancelled" and not index_state(workspace)["built"]
    resumed = wait_job(workspace, OPERATIONS.resume(workspace, job.id).id, timeout=240)
    assert resumed.status == "succeeded" and index_state(workspace)["built"]
    with pytest.raises(JobError, match="already finished"):
        OPERATIONS.resume(workspace, job.id)


def test_configs_validate_before_any_job_starts(workspace):
    from app.training_data import SYNTH
    from retrieval.service import INDEX, INGEST, IndexConfig, IngestConfig
    from training.synth import SynthConfig

    with pytest.raises(BadInputError, match="at least one file"):
        OPERATIONS.start(workspace, INGEST, IngestConfig())
    with pytest.raises(BadInputError, match="Chunk size"):
        OPERATIONS.start(workspace, INDEX, IndexConfig(chunk_tokens=8))
    with pytest.raises(BadInputError, match="no documents"):
        OPERATIONS.start(workspace, SYNTH, SynthConfig())
    with pytest.raises(BadInputError, match="not found"):
        OPERATIONS.start(workspace, SYNTH, SynthConfig(from_file=str(workspace.root / "nope.jsonl")))
    with pytest.raises(BadInputError, match="--teacher-url"):
        OPERATIONS.start(workspace, SYNTH, SynthConfig(teacher="openai"))
    assert list_jobs(workspace) == []


def test_synth_runs_as_a_job_keeps_its_key_off_disk_and_says_why_it_does_not_resume(workspace, monkeypatch):
    from app.training_data import SYNTH
    from retrieval.ingest import ingest_paths
    from training.dataset_store import list_datasets
    from training.synth import SynthConfig

    ingest_paths(workspace, [SAMPLE / "faq.md"])
    done = OPERATIONS.run_here(workspace, SYNTH, SynthConfig(teacher_api_key="sk-secret-123"))
    assert done.status == "succeeded", done.error
    assert done.result["dataset"]["name"] == list_datasets(workspace)[0].name
    assert "sk-secret-123" not in "".join(p.read_text() for p in done.dir.iterdir() if p.is_file())

    cancelled = OPERATIONS.run_here(workspace, SYNTH, SynthConfig(), echo=_cancel_at_first_progress(workspace))
    assert cancelled.status == "cancelled" and len(list_datasets(workspace)) == 1  # nothing half-written
    with pytest.raises(JobError, match="written whole"):
        OPERATIONS.resume(workspace, cancelled.id)


def test_synth_then_train_is_the_build_screens_fine_tune(workspace, tiny_llm):
    from app.training_data import SYNTH
    from training.config import defaults_for
    from training.synth import SynthConfig

    train = defaults_for("tiny-llama", adapter_name="from-build", max_steps=500, num_threads=1)
    job = OPERATIONS.start(workspace, SYNTH, SynthConfig(from_file=str(TRAIN_QA), then_train=train.to_dict()))
    done = wait_job(workspace, job.id, timeout=240)
    assert done.status == "succeeded", done.error
    trained = get_job(workspace, done.result["train_job"])
    try:
        assert trained.kind == "train" and trained.config["config"]["dataset"] == done.result["dataset"]["name"]
        assert trained.config["config"]["adapter_name"] == "from-build"
        with pytest.raises(JobError, match="already running"):  # the fine-tune rule, checked before writing
            OPERATIONS.start(workspace, SYNTH, SynthConfig(from_file=str(TRAIN_QA), then_train=train.to_dict()))
    finally:
        cancel_job(workspace, trained.id)
        wait_job(workspace, trained.id, timeout=120)


def test_next_round_as_a_job_records_its_round_and_starts_the_fine_tune(workspace, tiny_llm):
    from app.next_round import NEXT_ROUND, NextRoundConfig, list_rounds
    from ragtune import feedback

    turn = feedback.record_conversation(workspace, "Where is the Lumora head office?", "In Eindhoven.", variant="base")
    feedback.record_feedback(workspace, turn["message_id"], rating="up")
    with pytest.raises(BadInputError, match="fine-tuned variant"):
        OPERATIONS.run_here(workspace, NEXT_ROUND, NextRoundConfig(variant="rag"))
    job = OPERATIONS.run_here(workspace, NEXT_ROUND, NextRoundConfig(base_model="tiny-llama", epochs=50))
    assert job.status == "succeeded", job.error
    [record] = list_rounds(workspace)
    assert job.result["round_id"] == record.round_id and record.status == "training"
    logged = next(r for r in read_log(job.log_path)[0] if r.get("event") == "round")
    assert logged["train_job"] == record.job_id
    train = get_job(workspace, record.job_id)
    cancel_job(workspace, train.id)
    assert wait_job(workspace, train.id, timeout=120).finished
    with pytest.raises(BadInputError, match="no new feedback"):  # its feedback is spent
        OPERATIONS.run_here(workspace, NEXT_ROUND, NextRoundConfig(base_model="tiny-llama"))


def test_cli_flags_are_derived_from_each_operations_config():
    from app.cli import build_parser
    from app.next_round import NextRoundConfig
    from ragtune.config_args import dataclass_from_args
    from retrieval.service import IndexConfig, IngestConfig
    from training.synth import SynthConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, cls in (("ingest", IngestConfig), ("index", IndexConfig), ("synth", SynthConfig),
                         ("next-round", NextRoundConfig)):
        flags = {o for a in sub.choices[command]._actions for o in a.option_strings}
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli") is not False:
                assert "--" + f.name.replace("_", "-") in flags, (command, f.name)
    # the spellings the README and the tests use still parse to the same configs
    args = parser.parse_args(["ingest", "a.pdf", "docs/", "--index", "--max-pages", "9"])
    assert dataclass_from_args(IngestConfig, args, paths=args.paths) == IngestConfig(
        paths=["a.pdf", "docs/"], index=True, max_pages=9)
    args = parser.parse_args(["synth", "--from-file", "qa.jsonl", "--test-fraction", "0.2", "--split-by", "paraphrase"])
    config = dataclass_from_args(SynthConfig, args)
    assert (config.from_file, config.test_fraction, config.split_by, config.teacher) == \
        ("qa.jsonl", 0.2, "paraphrase", "extractive")
    args = parser.parse_args(["synth", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"])
    assert dataclass_from_args(SynthConfig, args).teacher == "openai"
    args = parser.parse_args(["next-round", "--model", "tiny-llama", "--publish", "--epochs", "2"])
    config = dataclass_from_args(NextRoundConfig, args).validate()
    assert (config.base_model, config.publish, config.wait, config.epochs) == ("tiny-llama", True, True, 2.0)
    args = parser.parse_args(["index", "--chunk-tokens", "128", "--mode", "bm25"])
    assert dataclass_from_args(IndexConfig, args).changes() == {"chunk_tokens": 128, "mode": "bm25"}


def test_a_waiting_next_round_cancels_its_fine_tune_and_resumes_the_same_round(workspace, tiny_llm):
    import time

    from app.next_round import NEXT_ROUND, NextRoundConfig, list_rounds
    from ragtune import feedback

    turn = feedback.record_conversation(workspace, "Where is the Lumora head office?", "In Eindhoven.", variant="base")
    feedback.record_feedback(workspace, turn["message_id"], rating="up")
    job = OPERATIONS.start(workspace, NEXT_ROUND, NextRoundConfig(base_model="tiny-llama", epochs=3000, wait=True))

    def wait_for_a_step(job_id):
        deadline = time.time() + 180
        while not _steps(get_job(workspace, job_id)):
            assert time.time() < deadline and not get_job(workspace, job_id).finished, get_job(workspace, job_id).error
            time.sleep(0.5)

    wait_for_a_step(job.id)  # the fine-tune's steps are the round's progress
    cancel_job(workspace, job.id)
    assert wait_job(workspace, job.id, timeout=120).status == "cancelled"
    [record] = list_rounds(workspace)
    assert wait_job(workspace, record.job_id, timeout=120).status == "cancelled"  # its fine-tune stopped with it

    before = len(_steps(get_job(workspace, record.job_id)))
    resumed = OPERATIONS.resume(workspace, job.id)
    deadline = time.time() + 180
    while len(_steps(get_job(workspace, record.job_id))) <= before:  # the same fine-tune steps on
        assert time.time() < deadline and not get_job(workspace, resumed.id).finished, get_job(workspace, resumed.id).error
        time.sleep(0.5)
    assert get_job(workspace, record.job_id).status == "running" and len(list_rounds(workspace)) == 1
    cancel_job(workspace, resumed.id)
    assert wait_job(workspace, resumed.id, timeout=120).status == "cancelled"
    assert wait_job(workspace, record.job_id, timeout=120).status == "cancelled"
