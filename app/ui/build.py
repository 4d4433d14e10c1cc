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
from ragtune.jobs import list_jobs, read_log

from .common import esc, fmt_seconds, guarded, log, open_ws

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


def build_index_now(ws_name, chunk_tokens, overlap, k, mode, dense_weight, bm25_weight, progress=gr.Progress()):
    from retrieval.index import build_index
    from retrieval.settings import save_settings

    ws = open_ws(ws_name)
    settings = save_settings(ws, chunk_tokens=int(chunk_tokens), overlap_tokens=int(overlap), k=int(k), mode=mode,
                             dense_weight=float(dense_weight), bm25_weight=float(bm25_weight))
    progress(None, desc="Embedding passages (the first time loads the embedding model)...")
    info = build_index(ws, progress=False, settings=settings)
    ctx_note = f"{info.get('embedded', 0)} newly embedded" if info.get("embedded") is not None else ""
    gr.Info(f"Index built: {info.get('chunks', '?')} passages{', ' + ctx_note if ctx_note else ''}.")
    return index_status(ws_name)


# ------------------------------------------------------------------ fine-tune

def _latest_train_job(ws):
    jobs = list_jobs(ws, kind="train")
    return jobs[0] if jobs else None


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
    starting = job.status == "running" and not steps
    label = "Starting (loading the model and data)" if starting else {"running": "Running", "succeeded": "Finished", "failed": "Failed", "cancelled": "Cancelled",
             "stopped": "Stopped", "queued": "Starting"}.get(job.status, job.status)
    extra = "".join(f"<div class='rt-plan'>{esc(text)}</div>" for text in _plan_lines(rows))
    if starting and not extra:
        label = "Starting (measuring the fastest precision, then the plan)"
    if job.status == "succeeded":
        adapter = (job.result or {}).get("adapter")
        extra += f"<div>Fine-tuned model <b>{esc(adapter)}</b> is ready: try it on the Chat tab as <i>ft</i>.</div>"
    elif job.error:
        extra += f"<div class='rt-error'>{esc(job.error)}</div>"
    return (
        f"<div id='train-state' data-status='{esc(job.status)}' data-job='{esc(job.id)}' data-step='{esc(step)}'>"
        f"<div><b>{label}</b> - job <code>{esc(job.id)}</code></div>"
        f"<div class='rt-bar'><div style='width:{pct}%'></div></div>"
        f"<div>step {esc(step)}/{esc(total or '?')} ({pct}%) | loss {esc(f'{loss:.4f}' if loss is not None else '-')}"
        f" | elapsed {fmt_seconds(elapsed)} | remaining {fmt_seconds(last.get('eta_s')) if job.status == 'running' else '-'}</div>"
        f"{extra}</div>"
    )


def training_view(ws_name):
    """Status, loss curve and button states of the newest training job (survives page reloads)."""
    job = _latest_train_job(open_ws(ws_name)) if ws_name else None
    rows = read_log(job.log_path)[0] if job else []
    running = job is not None and job.status in ("running", "queued")
    resumable = job is not None and job.status in ("cancelled", "stopped", "failed")
    return (_status_html(job, rows), _loss_frame(rows), gr.update(interactive=running),
            gr.update(interactive=resumable), gr.update(interactive=not running))


def _dataset_for(ws, source, upload, progress):
    """The same versioned dataset as `ragtune synth` (or `ragtune synth --from-file`), test split kept aside."""
    from app.training_data import dataset_from_documents, dataset_from_file

    if source == DATA_UPLOAD:
        if not upload:
            raise BadInputError("Choose a Q&A or chat file to train on (JSONL or CSV).")
        from training.chat_data import describe_errors

        dataset, errors = dataset_from_file(ws, Path(upload if isinstance(upload, str) else upload.name))
        if errors:
            gr.Warning(f"{len(errors)} line(s) of the file were skipped ({describe_errors(errors, limit=2)}).")
    else:
        def report(i, n, label=""):
            progress((i, n), desc=f"Writing practice questions from your documents ({i}/{n})")

        dataset = dataset_from_documents(ws, progress=report)
    counts = ", ".join(f"{n} {split}" for split, n in (dataset.counts or {}).items())
    gr.Info(f"Training set {dataset.name} written ({counts}); its test questions are kept aside for evaluation.")
    return dataset.name


def start_finetune(ws_name, source, upload, adapter_name, base_model, method, rank, alpha, epochs, lr,
                   progress=gr.Progress()):
    from training.config import defaults_for
    from training.jobs import refuse_if_training, start_training

    ws = open_ws(ws_name)
    refuse_if_training(ws)  # before spending minutes on the data; start_training checks again, under its lock
    dataset = _dataset_for(ws, source, upload, progress)
    name = (adapter_name or "").strip() or None
    config = defaults_for(base_model, method, dataset=dataset, adapter_name=name, rank=int(rank),
                          alpha=int(alpha), epochs=float(epochs), lr=float(lr))
    job = start_training(ws, config)
    gr.Info(f"Fine-tune started (job {job.id}). You can leave this page; it keeps running.")
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
    cancel_training(ws, job.id)
    gr.Info("Cancelling: the job stops at its next step and keeps its last checkpoint.")
    return training_view(ws_name)


def resume_finetune(ws_name):
    from training.jobs import resume_training

    ws = open_ws(ws_name)
    job = _latest_train_job(ws)
    if job is None or job.status not in ("cancelled", "stopped", "failed"):
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
            index_btn = gr.Button("Build index", variant="primary", elem_id="build-index")
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
    index_btn.click(guarded(build_index_now), [ws_select, *advanced], [index_md], concurrency_id="index",
                    api_name="build_index")
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
        tab.select(guarded(index_status), [ws_select], [index_md], show_progress="hidden", api_visibility="private")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(index_status), [ws_select], [index_md], show_progress="hidden")
        trigger(guarded(load_retrieval_settings), [ws_select], advanced, show_progress="hidden")
        trigger(guarded(training_view), [ws_select], view_outputs, show_progress="hidden")
