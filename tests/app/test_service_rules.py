"""Rules the CLI and the Build/Deploy screens share, each in one place (docs/app.md lists where)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragtune.errors import JobError, WorkspaceError
from ragtune.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TRAIN_QA = REPO / "datasets" / "sample_train_qa.jsonl"
SAMPLE = REPO / "datasets" / "sample"

pytestmark = pytest.mark.timeout(300)


def _cli(*args, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


def test_a_second_finetune_is_refused_while_one_runs(workspace, tiny_llm):
    from app.wiring import OPERATIONS
    from ragtune.jobs import cancel_job, get_job, wait_job
    from ragtune.operations import running
    from training.config import defaults_for
    from training.jobs import TRAIN

    config = defaults_for("tiny-llama", dataset=str(TRAIN_QA), max_steps=500, num_threads=1)
    job = OPERATIONS.start(workspace, TRAIN, config)
    try:
        assert running(workspace, TRAIN).id == job.id
        with pytest.raises(JobError, match="already running"):
            OPERATIONS.start(workspace, TRAIN, config)
    finally:
        cancel_job(workspace, job.id)
        wait_job(workspace, job.id, timeout=120)
    assert get_job(workspace, job.id).finished and running(workspace, TRAIN) is None


def test_two_concurrent_finetune_starts_one_wins_the_other_is_told(workspace, tiny_llm):
    import threading

    from app.wiring import OPERATIONS
    from ragtune.jobs import cancel_job, list_jobs, wait_job
    from training.config import defaults_for
    from training.jobs import TRAIN

    config = defaults_for("tiny-llama", dataset=str(TRAIN_QA), max_steps=500, num_threads=1)
    gate = threading.Barrier(2)
    started, refused = [], []

    def start(name):
        gate.wait()
        try:
            started.append(OPERATIONS.start(workspace, TRAIN, defaults_for("tiny-llama", dataset=str(TRAIN_QA), max_steps=500,
                                                                  num_threads=1, adapter_name=name)))
        except JobError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=start, args=(f"race-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert len(started) == 1 and len(refused) == 1, (started, refused)
        assert f"A fine-tune is already running in workspace '{workspace.name}' ({started[0].id})" in refused[0]
        assert f"ragtune jobs cancel {started[0].id} -w {workspace.name}" in refused[0]
        assert [j.id for j in list_jobs(workspace, kind="train")] == [started[0].id]
    finally:
        for job in started:
            cancel_job(workspace, job.id)
            wait_job(workspace, job.id, timeout=120)
    assert config.adapter_name is None  # the shared defaults were not touched


def test_train_on_my_file_makes_the_same_versioned_dataset_as_synth_from_file(tmp_path):
    from app.training_data import dataset_from_file

    home = tmp_path / "home"
    ws = Workspace.create("files", root=home / "workspaces")
    ui_version, errors = dataset_from_file(ws, TRAIN_QA)  # what the Build screen calls
    assert errors == []
    done = _cli("synth", "--from-file", str(TRAIN_QA), "-w", "files", "--json", home=home)
    assert done.returncode == 0, done.stderr
    import json

    cli_version = json.loads(done.stdout)
    assert ui_version.counts == cli_version["counts"] and ui_version.counts["test"] > 0
    assert ui_version.name != cli_version["name"]  # two versions, side by side


def test_index_staleness_is_one_library_rule_the_cli_shows_too(tmp_path):
    from retrieval.index import build_index, index_state
    from retrieval.ingest import ingest_paths

    home = tmp_path / "home"
    ws = Workspace.create("stale", root=home / "workspaces")
    assert index_state(ws) == {"built": False, "stale": False, "documents": 0, "manifest": None}
    ingest_paths(ws, [SAMPLE / "faq.md"])
    build_index(ws, progress=False)
    assert index_state(ws)["stale"] is False
    ingest_paths(ws, [SAMPLE / "employee_handbook.md"])
    state = index_state(ws)
    assert state["built"] and state["stale"] and state["documents"] == 2
    shown = _cli("index", "--status", "-w", "stale", home=home)
    assert shown.returncode == 1 and "STALE" in shown.stdout and "ragtune index -w stale" in shown.stdout


def test_deploy_suggestion_follows_the_newest_evaluation(workspace, tiny_llm):
    from evaluation.runner import run_eval
    from evaluation.service import suggested_variant
    from serving.engine import SamplingOptions
    from serving.factory import get_engine

    assert suggested_variant(workspace) == "rag"  # no evaluation yet: the default
    run_eval(workspace, [{"question": "What is the K7 top speed?", "answer": "2.3 m/s"}], "base",
             get_engine("embedded", model="tiny-llama"), options=SamplingOptions(max_tokens=4))
    assert suggested_variant(workspace) == "rag"  # only the base model was scored: nothing earned its cost


def test_missing_workspace_hint_is_a_command_that_works(tmp_path):
    folder = tmp_path / "My Project"
    with pytest.raises(WorkspaceError) as info:
        Workspace.open(str(folder))
    message = str(info.value)
    command = message.split("`")[1]
    assert command.startswith("ragtune workspace create ")
    home = tmp_path / "home"
    done = _cli(*command.split()[1:], home=home)
    assert done.returncode == 0, done.stderr
    name = command.split()[-1]
    assert f"-w {name}" in message
    assert Workspace.open(name, root=home / "workspaces").name == name
    # a plain name gets the same hint, with that name
    with pytest.raises(WorkspaceError, match="`ragtune workspace create nosuch`"):
        Workspace.open("nosuch")


def test_train_and_eval_flags_are_derived_from_their_config_dataclasses():
    import dataclasses

    from app.cli import build_parser
    from app.commands.training_cmds import build_train_config
    from evaluation.service import EvalConfig
    from training.config import TrainConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    train_flags = {o for a in sub.choices["train"]._actions for o in a.option_strings}
    eval_flags = {o for a in sub.choices["eval"]._actions for o in a.option_strings}
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in train_flags, f.name
    for f in dataclasses.fields(EvalConfig):
        assert "--" + f.name.replace("_", "-") in eval_flags, f.name
    # the old spellings still parse, and only what was given overrides the per-model defaults
    args = parser.parse_args(["train", "--model", "tiny-llama", "--name", "a1", "--rank", "4", "--alpha", "12",
                              "--packing", "false", "--max-length", "64", "--bf16", "auto", "--target-modules",
                              "q_proj,v_proj"])
    config = build_train_config(args)
    assert (config.base_model, config.adapter_name, config.rank, config.alpha, config.packing, config.max_length) == \
        ("tiny-llama", "a1", 4, 12, False, 64)
    assert config.bf16 is None and config.target_modules == ["q_proj", "v_proj"] and config.lr == 1e-2


def test_the_deploy_tab_and_ragtune_deploy_share_one_upload_pipeline(tmp_path):
    """The upload route of the assistant server applies the upload limits whoever started it."""
    import inspect

    import app.wiring.servers as servers  # the one deploy app of `ragtune deploy` and the Deploy tab (test_wiring)
    from app.wiring import deploy_uploads
    from ragtune.ingest_gate import UploadLimits, new_staging
    from ragtune.jobs import wait_job

    ws = Workspace.create("uploads", root=tmp_path / "workspaces")
    staged = new_staging(ws)
    big = staged / "notes.txt"
    big.write_text("Lumora notes.\n" * (21 * 1024 * 1024 // 14 + 1))  # over the upload limit (20 MB), not the local one
    # The upload's job applies the route's upload limits, and removes what was staged.
    job = wait_job(ws, deploy_uploads()(ws, staged, [big], UploadLimits()).id, timeout=240)
    assert job.status == "failed" and "more than the limit of 20 MB" in job.error, job.error
    assert not staged.exists()
    assert "deploy_uploads()" in inspect.getsource(servers)


def test_eval_retrieval_docs_builds_its_index_through_the_index_job(tmp_path):
    """One index-building path: `eval-retrieval --docs` runs the index operation as `ragtune index` does."""
    import json

    from ragtune.jobs import list_jobs, read_log
    from retrieval.index import index_state

    home = tmp_path / "home"
    done = _cli("eval-retrieval", "--qa", str(REPO / "datasets" / "sample_qa.jsonl"), "--docs", str(SAMPLE),
                "--keep", "-w", "evr", "--json", home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["n"] == 40 and report["hybrid"]["doc_hit@1"] > 0.5
    ws = Workspace.open(home / "workspaces" / "evr")
    jobs = list_jobs(ws, kind="index")
    assert [j.status for j in jobs] == ["succeeded"]
    assert report["index"] == jobs[0].result
    assert jobs[0].result["version"] == index_state(ws)["manifest"]["version"]
    steps = [r for r in read_log(jobs[0].log_path)[0] if r.get("step") is not None]
    assert steps[-1]["step"] == steps[-1]["total_steps"] == report["index"]["chunks"]


def _job_that_is(ws, kind: str, status: str, config: dict | None = None):
    """A job folder of `kind` that reads `status`, with no process behind it (nothing is run)."""
    from ragtune.atomic import atomic_write_json, read_json
    from ragtune.jobs import get_job, write_job_here

    job = write_job_here(ws, kind, "nothing", [], config=config or {})  # this process's pid: it reads running
    if status == "stopped":  # gone without an outcome
        atomic_write_json(job.dir / "job.json", {**read_json(job.dir / "job.json"), "pid": None})
    elif status != "running":
        atomic_write_json(job.dir / "status.json", {"status": status, "error": f"it {status}", "ended_at": 1.0,
                                                    "result": {}})
    job = get_job(ws, job.id)
    assert job.status == status
    return job


class _Resumed(Exception):
    pass


def _screens():
    """(job kind, the screen's view -> is its Resume button enabled, the screen's Resume handler, what it calls)."""
    from app.ui import build, documents, evaluate

    def enabled(update):
        return update["interactive"]

    def ingest(ws_name):
        next(documents.resume_ingest(ws_name, progress=lambda *a, **k: None))

    return {
        "eval": ("eval", lambda ws: enabled(evaluate.evaluation_view(ws, None)[2]), evaluate.resume_evaluation,
                 "app.wiring.OPERATIONS.resume"),
        "index": ("index", lambda ws: enabled(build.index_view(ws)[4]), build.resume_index_build,
                  "app.wiring.OPERATIONS.resume"),
        "train": ("train", lambda ws: enabled(build.training_view(ws)[3]), build.resume_finetune,
                  "app.wiring.OPERATIONS.resume"),
        "ingest": ("ingest", None, ingest, "app.wiring.OPERATIONS.resume"),
    }


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "cancelled", "stopped"])
@pytest.mark.parametrize("screen", ["eval", "index", "train", "ingest"])
def test_a_screen_resumes_a_job_exactly_when_its_status_is_resumable(workspace, monkeypatch, screen, status):
    """One rule (JobStatus.resumable: cancelled, stopped, failed) for every Resume button and handler.

    The Evaluate screen's handler used to pass any newest evaluation to the service (a succeeded or a
    running one was refused there, in the service's words, "Evaluation X is succeeded: only a cancelled,
    stopped or failed one resumes."), while its button and the Build screen's handlers applied the rule.
    """
    from ragtune.errors import BadInputError
    from ragtune.jobs import JobStatus

    kind, button_enabled, handler, target = _screens()[screen]

    def resumed(*_a, **_k):
        raise _Resumed()

    monkeypatch.setattr(target, resumed)
    _job_that_is(workspace, kind, status)
    ws_name = str(workspace.root)
    resumable = JobStatus(status).resumable
    assert resumable == (status in ("failed", "cancelled", "stopped"))
    if button_enabled is not None:
        assert button_enabled(ws_name) is resumable
    if resumable:
        with pytest.raises(_Resumed):
            handler(ws_name)
    else:
        with pytest.raises(BadInputError, match="^There is no stopped (evaluation|index build|fine-tune|upload) "
                                                "to resume.$"):
            handler(ws_name)


@pytest.mark.parametrize("record", ["kind", "module_ref"])
@pytest.mark.parametrize("kind", ["index", "synth"])
def test_jobs_show_names_the_resume_command_only_for_a_job_that_resumes(workspace, capsys, kind, record):
    """`ragtune jobs show -f` on a job that ended resumable: the resume command, or (synth) why it does not
    resume, as `ragtune synth` itself says; it used to offer `ragtune jobs resume` for a cancelled synth too,
    which then refused. A job record names its operation by kind; one written before named the Operation's
    "module:NAME", and reads the same."""
    from app.commands.training_cmds import follow_job
    from app.wiring import OPERATIONS
    from ragtune.errors import JobError

    ref = kind if record == "kind" else {"index": "retrieval.service:INDEX", "synth": "app.training_data:SYNTH"}[kind]
    job = _job_that_is(workspace, kind, "cancelled", config={"operation": ref, "config": {}})
    assert follow_job(workspace, job.id) == 1
    err = capsys.readouterr().err
    if kind == "index":
        assert f"resume with `ragtune jobs resume {job.id} -w {workspace.name}`" in err
    else:
        assert "resume with" not in err and "it does not resume: a dataset version is written whole" in err
        with pytest.raises(JobError, match="written whole"):
            OPERATIONS.resume(workspace, job.id)
