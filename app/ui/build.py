"""Build tab: two cards, the RAG index and the fine-tune, each with defaults and an advanced section.

Training runs as a background job (its own process); a 1-second timer tails its log.jsonl, so the
page never blocks and a reload finds the running job again from the workspace's jobs folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ragtune.errors import BadInputError
from ragtune.jobs import JobStatus, list_jobs, read_log

from .common import esc, fmt_seconds, guarded, log, open_ws
from .uploads import discard_superseded_uploads, discard_uploads, discard_when_read, stage_uploads

DATA_GENERATE = "Generate questions and answers from my documents"
DATA_UPLOAD = "Use my own Q&A or chat file"
LOSS_COLUMNS = ["step", "loss", "curve"]


# ------------------------------------------------------------------ RAG index

def index_status(ws_name) -> str:
    if not ws_name:
        return "No workspace open."
    from retrieval.index import index_state
    from retrieval.tuning import describe_tuning

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
    from retrieval.settings import RetrievalSettings, load_settings

    st = load_settings(open_ws(ws_name)) if ws_name else RetrievalSettings()
    return st.chunk_tokens, st.overlap_tokens, st.k, st.mode, st.dense_weight, st.bm25_weight


def index_config(chunk_tokens, overlap, k, mode, dense_weight, bm25_weight):
    """The card's Advanced settings as the IndexConfig `ragtune index` builds from its flags."""
    from retrieval.service import IndexConfig

    return IndexConfig(chunk_tokens=int(chunk_tokens), overlap_tokens=int(overlap), k=int(k), mode=mode,
                       dense_weight=float(dense_weight), bm25_weight=float(bm25_weight))


def _index_job_html(job) -> str:
    """The newest index job: a progress bar while it runs, the reason when it did not finish, else nothing."""
    from ragtune.operations import progress_of

    if job is None:
        return "<div id='index-job' data-status='none'></div>"
    p = progress_of(job)
    done, total = p["done"], p["total"]
    head = (f"<div id='index-job' data-status='{esc(job.status)}' data-job='{esc(job.id)}' data-done='{done}' "
            f"data-total='{total}'>")
    if job.status == JobStatus.RUNNING:
        pct = min(100, int(100 * done / total)) if total else 0
        eta = f" | remaining {fmt_seconds(p['eta_s'])}" if p.get("eta_s") else ""
        return (f"{head}<div><b>Building</b> - index job <code>{esc(job.id)}</code>: "
                f"{esc(p['label'] or 'starting (loading the embedding model)')}</div>"
                f"<div class='rt-bar'><div style='width:{pct}%'></div></div>"
                f"<div>{done}/{total or '?'} passages{eta}</div></div>")
    if job.status != JobStatus.SUCCEEDED and job.error:
        where = f" at {done}/{total} passages" if total else ""
        again = " Resume embeds only the passages not embedded yet." if job.status.resumable else ""
        return (f"{head}<div class='rt-error'>Index job <code>{esc(job.id)}</code> {esc(job.status)}{where}: "
                f"{esc(job.error)}{again}</div></div>")
    return head + "</div>"


def _latest_index_job(ws_name):
    from ragtune import operations
    from retrieval.service import INDEX

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
    from app.wiring import OPERATIONS
    from retrieval.service import INDEX

    job = OPERATIONS.start(open_ws(ws_name), INDEX, index_config(chunk_tokens, overlap, k, mode, dense_weight,
                                                                  bm25_weight))
    gr.Info(f"Building the index (job {job.id}). You can leave or reload this page; it keeps going.")
    return index_view(ws_name)


def cancel_index_build(ws_name, shown=None):
    """Cancel the running index job: the same cancel as `ragtune jobs cancel` (it stops between batches,
    the current index stays, every vector embedded so far is kept)."""
    from ragtune import operations

    job = _latest_index_job(ws_name)
    if job is None or job.finished:
        raise BadInputError("No index build is running.")
    operations.cancel(open_ws(ws_name), job.id)
    gr.Info("Cancelling: the build stops after the current batch; what is embedded so far is kept.")
    return index_view(ws_name, shown)


def resume_index_build(ws_name, shown=None):
    """Resume the newest stopped index job under its id and config, as `ragtune jobs resume` does."""
    from app.wiring import OPERATIONS

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
    from app.wiring import OPERATIONS
    from ragtune.jobs import wait_job
    from retrieval.service import INDEX, IndexConfig

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
    from ragtune.operations import progress_of

    p = progress_of(job)
    done, total = p["done"], p["total"]
    warnings = [r["message"] for r in p["rows"] if r.get("event") == "warning"]
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


def _loss_frame(rows: list[dict]) -> pd.DataFrame:
    points = []
    for r in rows:
        if r.get("loss") is not None and r.get("step") is not None:
            points.append({"step": r["step"], "loss": float(r["loss"]), "curve": "training loss"})
        if r.get("eval_loss") is not None and r.get("step") is not None:
            points.append({"step": r["step"], "loss": float(r["eval_loss"]), "curve": "validation loss"})
    if not points:
        return None  # an empty frame would fix the plot's colour domain before data arrives
    return pd.DataFrame(points, columns=LOSS_COLUMNS)


def _plan_lines(rows: list[dict]) -> list[str]:
    """What the job chose before training: its precision (and why) and its plan (rows, steps, expected time)."""
    lines = []
    for r in rows:
        if r.get("event") == "precision":
            n = r.get("threads")
            threads = f", {n} thread{'s' if n > 1 else ''}" if n else ""
            lines.append(f"Precision: {r.get('label')}{threads} ({r.get('reason')})")
        elif r.get("event") == "plan" and r.get("summary"):
            lines.append(r["summary"][:1].upper() + r["summary"][1:])
        elif r.get("event") == "budget_stop":
            lines.append(r.get("message", ""))
    return lines[-3:]


def _status_html(job, rows: list[dict]) -> str:
    if job is None:
        return "<div id='train-state' data-status='none'>No fine-tune started in this workspace yet.</div>"
    steps = [r for r in rows if r.get("step") is not None]
    last = steps[-1] if steps else {}
    total = last.get("total_steps") or (job.config or {}).get("total_steps")
    step = last.get("step", 0)
    pct = min(100, int(100 * step / total)) if total else 0
    elapsed = last.get("elapsed_s")
    if elapsed is None and job.started_at:
        elapsed = (job.ended_at or time.time()) - job.started_at
    loss = next((r["loss"] for r in reversed(steps) if r.get("loss") is not None), None)
    starting = job.status == JobStatus.RUNNING and not steps
    label = "Starting (loading the model and data)" if starting else {
        JobStatus.RUNNING: "Running", JobStatus.SUCCEEDED: "Finished", JobStatus.FAILED: "Failed",
        JobStatus.CANCELLED: "Cancelled", JobStatus.STOPPED: "Stopped", JobStatus.QUEUED: "Starting"}[job.status]
    extra = "".join(f"<div class='rt-plan'>{esc(text)}</div>" for text in _plan_lines(rows))
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
        f" | elapsed {fmt_seconds(elapsed)} | remaining {fmt_seconds(last.get('eta_s')) if job.status == JobStatus.RUNNING else '-'}</div>"
        f"{extra}</div>"
    )


def training_view(ws_name):
    """Status, loss curve and button states of the newest training job (survives page reloads)."""
    job = _latest_train_job(open_ws(ws_name)) if ws_name else None
    running = job is not None and job.status.running
    if job is not None and job.kind == "synth":
        return (_preparing_html(job), None, gr.update(interactive=running), gr.update(interactive=False),
                gr.update(interactive=not running))
    rows = read_log(job.log_path)[0] if job else []
    resumable = job is not None and job.status.resumable
    return (_status_html(job, rows), _loss_frame(rows), gr.update(interactive=running),
            gr.update(interactive=resumable), gr.update(interactive=not running))


def start_finetune(ws_name, source, upload, adapter_name, base_model, method, rank, alpha, epochs, lr):
    """One job writes the training set (the same operation as `ragtune synth` or `synth --from-file`: a
    versioned dataset, its test split kept aside), then starts the fine-tune on it (`training.jobs`)."""
    from app.training_data import SYNTH
    from app.wiring import OPERATIONS
    from training.config import defaults_for
    from training.synth import SynthConfig

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
    from training.config import defaults_for

    config = defaults_for(base_model or "gemma-3-270m", method or "lora")
    return config.rank, config.alpha, config.epochs, config.lr


def cancel_finetune(ws_name):
    from training.jobs import cancel_training

    ws = open_ws(ws_name)
    job = _latest_train_job(ws)
    if job is None or job.finished:
        raise BadInputError("No fine-tune is running.")
    cancel_training(ws, job.id)  # the same CANCEL file and SIGTERM for the synth job that prepares it
    gr.Info("Cancelling: the job stops at its next step and keeps its last checkpoint.")
    return training_view(ws_name)


def resume_finetune(ws_name):
    from training.jobs import resume_training

    ws = open_ws(ws_name)
    job = _latest_train_job(ws)
    if job is None or not job.status.resumable or job.kind != "train":
        raise BadInputError("There is no stopped fine-tune to resume.")
    resume_training(ws, job.id)
    gr.Info(f"Resuming job {job.id}.")
    return training_view(ws_name)


# ------------------------------------------------------------------ layout

def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks, tab: gr.Tab | None = None) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(variant="panel", elem_id="card-index"):
            gr.Markdown("### RAG index\nMakes your documents searchable, so answers quote them with sources. "
                        "Takes seconds to minutes; rebuild after adding documents.")
            index_md = gr.Markdown(elem_id="index-status")
            index_job = gr.HTML(elem_id="index-job-status")
            with gr.Row():
                index_btn = gr.Button("Build index", variant="primary", elem_id="build-index")
                index_cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="index-cancel")
                index_resume = gr.Button("Resume", interactive=False, elem_id="index-resume")
            index_seen = gr.State(None)
            with gr.Accordion("Advanced", open=False, elem_id="index-advanced"):
                chunk_size = gr.Slider(32, 1000, value=200, step=8, label="Passage size (tokens)", elem_id="chunk-size")
                overlap = gr.Slider(0, 500, value=40, step=8, label="Passage overlap (tokens, at most half the size)")
                k = gr.Slider(1, 20, value=5, step=1, label="Passages per answer (k)", elem_id="retrieval-k")
                mode = gr.Radio(["hybrid", "dense", "bm25"], value="hybrid", label="Search mode (hybrid = meaning + keywords)")
                dense_weight = gr.Slider(0, 2, value=1.0, step=0.1, label="Hybrid weight: meaning-based search")
                bm25_weight = gr.Slider(0, 2, value=1.0, step=0.1, label="Hybrid weight: keyword search (BM25)")
        with gr.Column(variant="panel", elem_id="card-finetune"):
            gr.Markdown("### Fine-tune\nTeaches the model your documents by training a small LoRA adapter on "
                        "question-answer pairs. Runs in the background: minutes on a CPU.")
            source = gr.Radio([DATA_GENERATE, DATA_UPLOAD], value=DATA_GENERATE, label="Training data", elem_id="train-source")
            upload = gr.File(label="Q&A or chat file (JSONL or CSV)", file_count="single", visible=False, elem_id="train-file")
            adapter_name = gr.Textbox(label="Name of the fine-tuned model (optional)", elem_id="adapter-name")
            with gr.Accordion("Advanced", open=False, elem_id="train-advanced"):
                base_model = gr.Dropdown([ctx.model], value=ctx.model, label="Base model", allow_custom_value=True,
                                         info="Must match the model the app serves, to chat with the result.")
                method = gr.Radio(["lora", "qlora"], value="lora", label="Method (QLoRA uses less memory)")
                rank = gr.Slider(2, 64, value=16, step=2, label="LoRA rank", elem_id="lora-rank")
                alpha = gr.Slider(1, 256, value=32, step=1, label="LoRA alpha (scale = alpha / rank)",
                                  elem_id="lora-alpha")
                epochs = gr.Number(value=3, label="Epochs", minimum=0.1, elem_id="train-epochs")
                lr = gr.Number(value=2e-4, label="Learning rate", elem_id="train-lr")
            with gr.Row():
                start_btn = gr.Button("Start fine-tune", variant="primary", elem_id="train-start")
                cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="train-cancel")
                resume_btn = gr.Button("Resume", interactive=False, elem_id="train-resume")
            status = gr.HTML(elem_id="train-status")
            loss_plot = gr.LinePlot(None, x="step", y="loss", color="curve",
                                    title="Loss", height=260, elem_id="loss-plot")
    timer = gr.Timer(1.0)

    view_outputs = [status, loss_plot, cancel_btn, resume_btn, start_btn]
    source.change(lambda s: gr.update(visible=s == DATA_UPLOAD), [source], [upload], show_progress="hidden")
    advanced = [chunk_size, overlap, k, mode, dense_weight, bm25_weight]
    index_outputs = [index_job, index_md, index_btn, index_cancel, index_resume, index_seen]
    index_btn.click(guarded(start_index_build), [ws_select, *advanced], index_outputs, api_visibility="private")
    index_cancel.click(guarded(cancel_index_build), [ws_select, index_seen], index_outputs, api_visibility="private")
    index_resume.click(guarded(resume_index_build), [ws_select, index_seen], index_outputs, api_visibility="private")
    gr.api(guarded(build_index_and_wait), api_name="build_index")

    def index_tick(ws_name, shown):
        try:
            return index_view(ws_name, shown)
        except Exception:  # noqa: BLE001 - the next tick retries
            log.debug("index view refresh failed", exc_info=True)
            return tuple(gr.skip() for _ in index_outputs)

    timer.tick(index_tick, [ws_select, index_seen], index_outputs, show_progress="hidden", api_visibility="private")
    start_btn.click(guarded(start_finetune), [ws_select, source, upload, adapter_name, base_model, method, rank,
                                              alpha, epochs, lr], view_outputs)
    cancel_btn.click(guarded(cancel_finetune), [ws_select], view_outputs)
    resume_btn.click(guarded(resume_finetune), [ws_select], view_outputs)
    def tick(ws_name):
        try:
            return training_view(ws_name)
        except Exception:  # noqa: BLE001 - a toast every second would drown the page; the next tick retries
            log.debug("training view refresh failed", exc_info=True)
            return tuple(gr.skip() for _ in view_outputs)

    timer.tick(tick, [ws_select], view_outputs, show_progress="hidden", api_visibility="private")
    for trigger in (base_model.change, demo.load):
        trigger(guarded(model_defaults), [base_model, method], [rank, alpha, epochs, lr], show_progress="hidden")
    if tab is not None:  # documents may have changed on another tab
        tab.select(guarded(index_view), [ws_select], index_outputs, show_progress="hidden", api_visibility="private")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(index_view), [ws_select], index_outputs, show_progress="hidden")
        trigger(guarded(load_retrieval_settings), [ws_select], advanced, show_progress="hidden")
        trigger(guarded(training_view), [ws_select], view_outputs, show_progress="hidden")
