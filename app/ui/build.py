"""Build tab: two cards, the RAG index and the fine-tune, each with defaults and an advanced section.

Training runs as a background job (its own process); a 1-second timer tails its log.jsonl, so the
page never blocks and a reload finds the running job again from the workspace's jobs folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from app.training_data import SYNTH
from app.wiring import OPERATIONS
from ragtune import operations
from ragtune.errors import BadInputError
from ragtune.job_events import (BudgetStop, JobProgress, PlanMade, PrecisionChosen, TrainingStep, of_type,
                                read_events)
from ragtune.jobs import JobStatus, cancel_job, list_jobs, wait_job
from retrieval.index import index_state
from retrieval.service import INDEX, IndexConfig
from retrieval.settings import RetrievalSettings, load_settings
from retrieval.tuning import describe_tuning
from training.config import defaults_for
from training.synth import SynthConfig

from .common import esc, fmt_seconds, guarded, open_ws
from .job_controls import JobButtons, refreshing
from .uploads import discard_superseded_uploads, discard_uploads, discard_when_read, stage_uploads

DATA_GENERATE = "Generate questions and answers from my documents"
DATA_UPLOAD = "Use my own Q&A or chat file"
LOSS_COLUMNS = ["step", "loss", "curve"]


# ------------------------------------------------------------------ RAG index

def index_status(ws_name) -> str:
    if not ws_name:
        return "No workspace open."
    state = index_state(open_ws(ws_name))
    manifest, docs = state["manifest"], state["documents"]
    if not state["built"]:
        return ("**Index: not built yet.** " + (f"{docs} document(s) waiting: build it." if docs
                                               else "Add documents on the Documents tab, then build it."))
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest["built_at"])) if manifest.get("built_at") else ""
    stale = "\n\n**Documents changed since this build: build again so answers use them.**" if state["stale"] else ""
    return (f"**Index ready**: {manifest.get('chunks', '?')} passages from {manifest.get('documents', '?')} "
            f"documents ({manifest.get('kind', '?')} search), version `{manifest.get('version', '?')}`, built {built}. "
            + describe_tuning(manifest.get("tuned")) + stale)


def load_retrieval_settings(ws_name):
    st = load_settings(open_ws(ws_name)) if ws_name else RetrievalSettings()
    return st.chunk_tokens, st.overlap_tokens, st.k, st.mode, st.dense_weight, st.bm25_weight


def index_config(chunk_tokens, overlap, k, mode, dense_weight, bm25_weight):
    """The card's Advanced settings as the IndexConfig `ragtune index` builds from its flags."""
    return IndexConfig(chunk_tokens=int(chunk_tokens), overlap_tokens=int(overlap), k=int(k), mode=mode,
                       dense_weight=float(dense_weight), bm25_weight=float(bm25_weight))


def _index_job_html(job) -> str:
    """The newest index job: a progress bar while it runs, the reason when it did not finish, else nothing."""
    if job is None:
        return "<div id='index-job' data-status='none'></div>"
    p = JobProgress.of_job(job)
    done, total = p.done, p.total
    head = (f"<div id='index-job' data-status='{esc(job.status)}' data-job='{esc(job.id)}' data-done='{done}' "
            f"data-total='{total}'>")
    if job.status == JobStatus.RUNNING:
        pct = min(100, int(100 * done / total)) if total else 0
        eta = f" | remaining {fmt_seconds(p.eta_s)}" if p.eta_s else ""
        return (f"{head}<div><b>Building</b> - index job <code>{esc(job.id)}</code>: "
                f"{esc(p.label or 'starting (loading the embedding model)')}</div>"
                f"<div class='rt-bar'><div style='width:{pct}%'></div></div>"
                f"<div>{done}/{total or '?'} passages{eta}</div></div>")
    if job.status != JobStatus.SUCCEEDED and job.error:
        where = f" at {done}/{total} passages" if total else ""
        again = " Resume embeds only the passages not embedded yet." if job.status.resumable else ""
        return (f"{head}<div class='rt-error'>Index job <code>{esc(job.id)}</code> {esc(job.status)}{where}: "
                f"{esc(job.error)}{again}</div></div>")
    return head + "</div>"


def _latest_index_job(ws_name):
    return operations.latest(open_ws(ws_name), INDEX) if ws_name else None


def index_view(ws_name, shown: str | None = None):
    """The index card: the newest index job's progress (a reload finds it) and, when that job's state
    changed since ``shown``, the index state (built / stale); returns (job html, status, build, cancel,
    resume buttons, shown)."""
    job = _latest_index_job(ws_name)
    running = job is not None and job.status.running
    seen = f"{ws_name}:{job.id if job else ''}:{job.status if job else ''}"
    status = index_status(ws_name) if seen != shown else gr.skip()
    return (_index_job_html(job), status, gr.update(interactive=not running), gr.update(interactive=running),
            gr.update(interactive=job is not None and job.status.resumable), seen)


def start_index_build(ws_name, chunk_tokens, overlap, k, mode, dense_weight, bm25_weight):
    """Start the index job (the same operation as `ragtune index`); the card follows it."""
    job = OPERATIONS.start(open_ws(ws_name), INDEX, index_config(chunk_tokens, overlap, k, mode, dense_weight,
                                                                  bm25_weight))
    gr.Info(f"Building the index (job {job.id}). You can leave or reload this page; it keeps going.")
    return index_view(ws_name)


def cancel_index_build(ws_name, shown=None):
    """Cancel the running index job: the same cancel as `ragtune jobs cancel` (it stops between batches,
    the current index stays, every vector embedded so far is kept)."""
    job = _latest_index_job(ws_name)
    if job is None or job.finished:
        raise BadInputError("No index build is running.")
    cancel_job(open_ws(ws_name), job.id)
    gr.Info("Cancelling: the build stops after the current batch; what is embedded so far is kept.")
    return index_view(ws_name, shown)


def resume_index_build(ws_name, shown=None):
    """Resume the newest stopped index job under its id and config, as `ragtune jobs resume` does."""
    job = _latest_index_job(ws_name)
    if job is None or not job.status.resumable:
        raise BadInputError("There is no stopped index build to resume.")
    OPERATIONS.resume(open_ws(ws_name), job.id)
    gr.Info(f"Resuming index job {job.id}: only the passages not embedded yet are embedded.")
    return index_view(ws_name, shown)


def build_index_and_wait(workspace: str) -> str:
    """Build the workspace's index with its saved settings and wait for it; returns the index state.

    The same index job as the Build button and `ragtune index` (its own process), waited for here.
    """
    ws = open_ws(workspace)
    job = wait_job(ws, OPERATIONS.start(ws, INDEX, IndexConfig()).id, timeout=3600)
    if job.status != JobStatus.SUCCEEDED:
        raise BadInputError(f"The index job {job.id} {job.status}: {job.error}")
    return index_status(workspace)


# ------------------------------------------------------------------ fine-tune

def _latest_train_job(ws):
    """The newest fine-tune: its training job, or the synth job still writing its training set."""
    jobs = [j for j in list_jobs(ws) if j.kind == "train"
            or (j.kind == "synth" and ((j.config or {}).get("config") or {}).get("then_train") is not None)]
    return jobs[0] if jobs else None


def _preparing_html(job) -> str:
    """A fine-tune whose training set is still being written (or whose writing failed)."""
    p = JobProgress.of_job(job)
    done, total, warnings = p.done, p.total, p.warnings
    status = "preparing" if job.status.running else job.status
    text = (f"Writing practice questions from your documents: {done}/{total} passages" if total
            else "Preparing the training set") if job.status.running else {
        JobStatus.CANCELLED: "Cancelled while preparing the training set",
        JobStatus.FAILED: "The training set could not be made",
        JobStatus.STOPPED: "Stopped while preparing the training set"}.get(job.status, job.status)
    extra = "".join(f"<div class='rt-plan'>{esc(w)}</div>" for w in warnings)
    if job.error and job.status != JobStatus.SUCCEEDED:
        extra += f"<div class='rt-error'>{esc(job.error)}</div>"
    return (f"<div id='train-state' data-status='{esc(status)}' data-job='{esc(job.id)}' data-step='0'>"
            f"<div><b>{esc(text)}</b> - job <code>{esc(job.id)}</code>; the fine-tune starts when it is written</div>"
            f"{extra}</div>")


def _loss_frame(events: list) -> pd.DataFrame:
    points = []
    for e in of_type(events, TrainingStep):
        if e.loss is not None:
            points.append({"step": e.step, "loss": float(e.loss), "curve": "training loss"})
        if e.eval_loss is not None:
            points.append({"step": e.step, "loss": float(e.eval_loss), "curve": "validation loss"})
    if not points:
        return None  # an empty frame would fix the plot's colour domain before data arrives
    return pd.DataFrame(points, columns=LOSS_COLUMNS)


def _plan_lines(events: list) -> list[str]:
    """What the job chose before training: its precision (and why) and its plan (rows, steps, expected time)."""
    lines = [e.describe() for e in events if isinstance(e, (PrecisionChosen, PlanMade, BudgetStop)) and e.describe()]
    return [line[:1].upper() + line[1:] for line in lines[-3:]]


def _status_html(job, events: list) -> str:
    if job is None:
        return "<div id='train-state' data-status='none'>No fine-tune started in this workspace yet.</div>"
    steps = of_type(events, TrainingStep)
    last = steps[-1] if steps else TrainingStep()
    total = last.total_steps
    step = last.step
    pct = min(100, int(100 * step / total)) if total else 0
    elapsed = last.elapsed_s
    if elapsed is None and job.started_at:
        elapsed = (job.ended_at or time.time()) - job.started_at
    loss = next((e.loss for e in reversed(steps) if e.loss is not None), None)
    starting = job.status == JobStatus.RUNNING and not steps
    label = "Starting (loading the model and data)" if starting else {
        JobStatus.RUNNING: "Running", JobStatus.SUCCEEDED: "Finished", JobStatus.FAILED: "Failed",
        JobStatus.CANCELLED: "Cancelled", JobStatus.STOPPED: "Stopped", JobStatus.QUEUED: "Starting"}[job.status]
    extra = "".join(f"<div class='rt-plan'>{esc(text)}</div>" for text in _plan_lines(events))
    if starting and not extra:
        label = "Starting (measuring the fastest precision, then the plan)"
    if job.status == JobStatus.SUCCEEDED:
        adapter = (job.result or {}).get("adapter")
        extra += f"<div>Fine-tuned model <b>{esc(adapter)}</b> is ready: try it on the Chat tab as <i>ft</i>.</div>"
    elif job.error:
        extra += f"<div class='rt-error'>{esc(job.error)}</div>"
    return (
        f"<div id='train-state' data-status='{esc(job.status)}' data-job='{esc(job.id)}' data-step='{esc(step)}'>"
        f"<div><b>{label}</b> - job <code>{esc(job.id)}</code></div>"
        f"<div class='rt-bar'><div style='width:{pct}%'></div></div>"
        f"<div>step {esc(step)}/{esc(total or '?')} ({pct}%) | loss {esc(f'{loss:.4f}' if loss is not None else '-')}"
        f" | elapsed {fmt_seconds(elapsed)} | remaining {fmt_seconds(last.eta_s) if job.status == JobStatus.RUNNING else '-'}</div>"
        f"{extra}</div>"
    )


def training_view(ws_name):
    """Status, loss curve and button states of the newest training job (survives page reloads)."""
    job = _latest_train_job(open_ws(ws_name)) if ws_name else None
    running = job is not None and job.status.running
    if job is not None and job.kind == "synth":
        return (_preparing_html(job), None, gr.update(interactive=running), gr.update(interactive=False),
                gr.update(interactive=not running))
    events = read_events(job.log_path)[0] if job else []
    resumable = job is not None and job.status.resumable
    return (_status_html(job, events), _loss_frame(events), gr.update(interactive=running),
            gr.update(interactive=resumable), gr.update(interactive=not running))


def start_finetune(ws_name, source, upload, adapter_name, base_model, method, rank, alpha, epochs, lr):
    """One job writes the training set (the same operation as `ragtune synth` or `synth --from-file`: a
    versioned dataset, its test split kept aside), then starts the fine-tune on it (`training.jobs`)."""
    ws = open_ws(ws_name)
    if source == DATA_UPLOAD and not upload:
        raise BadInputError("Choose a Q&A or chat file to train on (JSONL or CSV).")
    train = defaults_for(base_model, method, adapter_name=(adapter_name or "").strip() or None, rank=int(rank),
                         alpha=int(alpha), epochs=float(epochs), lr=float(lr))
    staged = stage_uploads([Path(upload if isinstance(upload, str) else upload.name)]) if source == DATA_UPLOAD else []
    try:
        discard_superseded_uploads(ws, SYNTH.kind)
        job = OPERATIONS.start(ws, SYNTH, SynthConfig(from_file=str(staged[0]) if staged else None,
                                                      then_train=train.to_dict()))
    except BaseException:
        discard_uploads(staged)  # refused before a job took it
        raise
    discard_when_read(ws, job.id)  # the dataset holds its rows once the job succeeds
    gr.Info(f"Preparing the training set (job {job.id}); the fine-tune starts as soon as it is written. "
            "You can leave this page; it keeps running.")
    return training_view(ws_name)


def model_defaults(base_model, method):
    """Fill the advanced fields with what works for this model size."""
    config = defaults_for(base_model or "gemma-3-270m", method or "lora")
    return config.rank, config.alpha, config.epochs, config.lr


def cancel_finetune(ws_name):
    ws = open_ws(ws_name)
    job = _latest_train_job(ws)
    if job is None or job.finished:
        raise BadInputError("No fine-tune is running.")
    cancel_job(ws, job.id)  # the same CANCEL file and SIGTERM for the synth job that prepares it
    gr.Info("Cancelling: the job stops at its next step and keeps its last checkpoint.")
    return training_view(ws_name)


def resume_finetune(ws_name):
    ws = open_ws(ws_name)
    job = _latest_train_job(ws)
    if job is None or not job.status.resumable or job.kind != "train":
        raise BadInputError("There is no stopped fine-tune to resume.")
    OPERATIONS.resume(ws, job.id)
    gr.Info(f"Resuming job {job.id}.")
    return training_view(ws_name)


# ------------------------------------------------------------------ layout

class IndexCard:
    """The RAG index card: its state, the index job's progress and buttons, and the Advanced settings."""

    def __init__(self):
        gr.Markdown("### RAG index\nMakes your documents searchable, so answers quote them with sources. "
                    "Takes seconds to minutes; rebuild after adding documents.")
        self.status_md = gr.Markdown(elem_id="index-status")
        self.job_html = gr.HTML(elem_id="index-job-status")
        self.buttons = JobButtons("Build index", start_id="build-index", prefix="index")
        self.seen = gr.State(None)
        with gr.Accordion("Advanced", open=False, elem_id="index-advanced"):
            self.settings = [  # index_config's arguments, in its order
                gr.Slider(32, 1000, value=200, step=8, label="Passage size (tokens)", elem_id="chunk-size"),
                gr.Slider(0, 500, value=40, step=8, label="Passage overlap (tokens, at most half the size)"),
                gr.Slider(1, 20, value=5, step=1, label="Passages per answer (k)", elem_id="retrieval-k"),
                gr.Radio(["hybrid", "dense", "bm25"], value="hybrid", label="Search mode (hybrid = meaning + keywords)"),
                gr.Slider(0, 2, value=1.0, step=0.1, label="Hybrid weight: meaning-based search"),
                gr.Slider(0, 2, value=1.0, step=0.1, label="Hybrid weight: keyword search (BM25)"),
            ]

    @property
    def outputs(self) -> list:
        """index_view's outputs, in its order."""
        return [self.job_html, self.status_md, self.buttons.start, self.buttons.cancel, self.buttons.resume,
                self.seen]


class FinetuneCard:
    """The fine-tune card: its training data and settings, its job's buttons, state and loss curve."""

    def __init__(self, model: str):
        gr.Markdown("### Fine-tune\nTeaches the model your documents by training a small LoRA adapter on "
                    "question-answer pairs. Runs in the background: minutes on a CPU.")
        self.source = gr.Radio([DATA_GENERATE, DATA_UPLOAD], value=DATA_GENERATE, label="Training data",
                               elem_id="train-source")
        self.upload = gr.File(label="Q&A or chat file (JSONL or CSV)", file_count="single", visible=False,
                              elem_id="train-file")
        self.adapter_name = gr.Textbox(label="Name of the fine-tuned model (optional)", elem_id="adapter-name")
        with gr.Accordion("Advanced", open=False, elem_id="train-advanced"):
            self.base_model = gr.Dropdown([model], value=model, label="Base model", allow_custom_value=True,
                                          info="Must match the model the app serves, to chat with the result.")
            self.method = gr.Radio(["lora", "qlora"], value="lora", label="Method (QLoRA uses less memory)")
            self.hyperparameters = [  # model_defaults' outputs, in its order
                gr.Slider(2, 64, value=16, step=2, label="LoRA rank", elem_id="lora-rank"),
                gr.Slider(1, 256, value=32, step=1, label="LoRA alpha (scale = alpha / rank)", elem_id="lora-alpha"),
                gr.Number(value=3, label="Epochs", minimum=0.1, elem_id="train-epochs"),
                gr.Number(value=2e-4, label="Learning rate", elem_id="train-lr"),
            ]
        self.buttons = JobButtons("Start fine-tune", start_id="train-start", prefix="train")
        self.status = gr.HTML(elem_id="train-status")
        self.loss_plot = gr.LinePlot(None, x="step", y="loss", color="curve", title="Loss", height=260,
                                     elem_id="loss-plot")

    @property
    def inputs(self) -> list:
        """start_finetune's arguments after the workspace, in its order."""
        return [self.source, self.upload, self.adapter_name, self.base_model, self.method, *self.hyperparameters]

    @property
    def outputs(self) -> list:
        """training_view's outputs, in its order."""
        return [self.status, self.loss_plot, self.buttons.cancel, self.buttons.resume, self.buttons.start]


def _wire_index(ws_select: gr.Dropdown, card: IndexCard, timer: gr.Timer) -> None:
    buttons, outputs = card.buttons, card.outputs
    buttons.start.click(guarded(start_index_build), [ws_select, *card.settings], outputs, api_visibility="private")
    buttons.cancel.click(guarded(cancel_index_build), [ws_select, card.seen], outputs, api_visibility="private")
    buttons.resume.click(guarded(resume_index_build), [ws_select, card.seen], outputs, api_visibility="private")
    gr.api(guarded(build_index_and_wait), api_name="build_index")
    timer.tick(refreshing(index_view, outputs, "index view"), [ws_select, card.seen], outputs,
               show_progress="hidden", api_visibility="private")


def _wire_finetune(ws_select: gr.Dropdown, demo: gr.Blocks, card: FinetuneCard, timer: gr.Timer) -> None:
    card.source.change(lambda s: gr.update(visible=s == DATA_UPLOAD), [card.source], [card.upload],
                       show_progress="hidden")
    buttons, outputs = card.buttons, card.outputs
    buttons.start.click(guarded(start_finetune), [ws_select, *card.inputs], outputs)
    buttons.cancel.click(guarded(cancel_finetune), [ws_select], outputs)
    buttons.resume.click(guarded(resume_finetune), [ws_select], outputs)
    timer.tick(refreshing(training_view, outputs, "training view"), [ws_select], outputs, show_progress="hidden",
               api_visibility="private")
    for trigger in (card.base_model.change, demo.load):
        trigger(guarded(model_defaults), [card.base_model, card.method], card.hyperparameters, show_progress="hidden")


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks, tab: gr.Tab | None = None) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(variant="panel", elem_id="card-index"):
            index = IndexCard()
        with gr.Column(variant="panel", elem_id="card-finetune"):
            finetune = FinetuneCard(ctx.model)
    timer = gr.Timer(1.0)
    _wire_finetune(ws_select, demo, finetune, timer)
    _wire_index(ws_select, index, timer)
    if tab is not None:  # documents may have changed on another tab
        tab.select(guarded(index_view), [ws_select], index.outputs, show_progress="hidden", api_visibility="private")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(index_view), [ws_select], index.outputs, show_progress="hidden")
        trigger(guarded(load_retrieval_settings), [ws_select], index.settings, show_progress="hidden")
        trigger(guarded(training_view), [ws_select], finetune.outputs, show_progress="hidden")
