"""Evaluate tab: run a scored comparison of variants, show intervals and plots, the recommendation,
the blind arena with a leaderboard, and the report download."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app.wiring import OPERATIONS
from evaluation.arena import leaderboard, new_battle as make_battle, record_vote
from evaluation.recommend import recommend
from evaluation.report import export_report
from evaluation.runner import list_runs, load_run, summarize
from evaluation.service import (EVAL, HELD_OUT, SAMPLE, EvalConfig, EvalJobConfig, EvaluationProgress,
                                evaluate as run_evaluation, evaluation_progress)
from evaluation.store import run_results
from ragtune.errors import BadInputError
from ragtune.jobs import JobStatus, cancel_job
from ragtune.operations import latest

from .common import VARIANTS, adapter_names, esc, fmt_seconds, guarded, open_ws
from .job_controls import JobButtons, refreshing

QA_HELD_OUT = "Held-out questions of the newest training set"
QA_SAMPLE = "Sample questions (Lumora Robotics demo)"
QA_UPLOAD = "My own file"
TABLE_COLUMNS = ["Variant", "Metric", "Mean", "95% CI low", "95% CI high", "Answers"]
HEADLINE_METRICS = ("token_f1", "semantic_similarity", "fact_hit", "groundedness", "hit_at_k", "citation_accuracy",
                    "latency_s")


def eval_config(ctx, source, upload, variants, adapter, limit, max_tokens) -> EvalConfig:
    """The screen's choices as the EvalConfig the CLI builds from its flags."""
    if source == QA_UPLOAD:
        if not upload:
            raise BadInputError("Choose a questions file (JSONL or CSV with question and answer).")
        qa = str(upload if isinstance(upload, str) else upload.name)
    else:
        qa = HELD_OUT if source == QA_HELD_OUT else SAMPLE
    url = ctx.engine_url
    if ctx.engine_kind == "vllm" and not url:
        url = getattr(ctx.engine(), "url", None)  # the app's own vLLM server: the job shares it, no second one
    return EvalConfig(qa=qa, variants=",".join(v for v in (variants or []) if v), adapter=adapter or None,
                      engine=ctx.engine_kind, model=ctx.model, url=url,
                      limit=int(limit) if limit and int(limit) > 0 else None, max_tokens=int(max_tokens))


def _metric_rows(summary: dict) -> list[list]:
    """Flatten summary['variants'][variant][metric] = {mean, ci_low, ci_high, n} into table rows."""
    rows = []
    for variant, info in (summary.get("variants") or {}).items():
        for metric, stat in (info.get("metrics") or {}).items():
            if not isinstance(stat, dict) or stat.get("mean") is None:
                continue
            rows.append([variant, metric, round(stat["mean"], 3), _r(stat.get("ci_low")), _r(stat.get("ci_high")),
                         stat.get("n")])
    rows.sort(key=lambda r: (HEADLINE_METRICS.index(r[1]) if r[1] in HEADLINE_METRICS else 99, r[1], r[0]))
    return rows


def _r(x):
    return round(x, 3) if isinstance(x, (int, float)) else None


def _box_figure(ws, run_id: str, metric: str = "token_f1"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_variant: dict[str, list[float]] = {}
    for r in run_results(ws, run_id):
        value = (r.get("metrics") or {}).get(metric)
        if isinstance(value, (int, float)):
            by_variant.setdefault(r["variant"], []).append(float(value))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if by_variant:
        ax.boxplot(list(by_variant.values()), tick_labels=list(by_variant.keys()))
    ax.set_title(f"{metric} per question")
    ax.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    plt.close(fig)
    return fig


def show_run(ws, run_id: str):
    run = load_run(ws, run_id)
    summary = summarize(run)
    table = pd.DataFrame(_metric_rows(summary), columns=TABLE_COLUMNS)
    rec = summary.get("recommendation") or recommend(summary)
    main = rec.get("primary_metric") or "token_f1"
    if not (table["Metric"] == main).any():
        main = table["Metric"].iloc[0] if len(table) else ""
    bars = table[table["Metric"] == main][["Variant", "Mean"]] if main else None
    lines = str(rec.get("text", "")).splitlines()
    body = "\n".join(line if line.startswith(("- ", "  ")) else f"\n{line}\n" for line in lines)
    rec_md = f"### {rec.get('label', rec.get('verdict', ''))}\n{body}"
    return table, gr.update(value=bars, title=f"Mean {main} by variant"), _box_figure(ws, run_id, main or "token_f1"), rec_md


def start_evaluation(ctx, ws_name, source, upload, variants, adapter, limit, max_tokens):
    ws = open_ws(ws_name)
    config = eval_config(ctx, source, upload, variants, adapter, limit, max_tokens)
    if config.retrieves:
        ctx.retriever(ws)  # a clear "build the index first" before the job starts
    job = OPERATIONS.start(ws, EVAL, EvalJobConfig.of(config))
    gr.Info(f"Evaluation {job.id} started. You can leave or reload this page; it keeps running.")
    return evaluation_view(ws_name, None)


def cancel_evaluation(ws_name, _shown=None):
    ws = open_ws(ws_name)
    job = latest(ws, EVAL)
    if job is None or job.finished:
        raise BadInputError("No evaluation is running.")
    cancel_job(ws, job.id)
    gr.Info("Cancelling: the evaluation stops after the current answer; every answer so far is kept.")
    return evaluation_view(ws_name, _shown)


def resume_evaluation(ws_name, _shown=None):
    ws = open_ws(ws_name)
    job = latest(ws, EVAL)
    if job is None or not job.status.resumable:
        raise BadInputError("There is no stopped evaluation to resume.")
    OPERATIONS.resume(ws, job.id)
    gr.Info(f"Resuming evaluation {job.id}: only the missing answers are computed.")
    return evaluation_view(ws_name, _shown)


def _state_html(job, progress: EvaluationProgress) -> str:
    if job is None:
        return "<div id='eval-state' data-status='none'>No evaluation started in this workspace yet.</div>"
    done, total = progress.done, progress.total
    pct = min(100, int(100 * done / total)) if total else 0
    starting = job.status == JobStatus.RUNNING and not total
    label = "Starting (loading the model and the questions)" if starting else {
        JobStatus.RUNNING: "Answering", JobStatus.SUCCEEDED: "Finished", JobStatus.FAILED: "Failed",
        JobStatus.CANCELLED: "Cancelled", JobStatus.STOPPED: "Stopped", JobStatus.QUEUED: "Starting"}[job.status]
    rate = f" | {progress.rate:.2f} answers/s" if progress.rate else ""
    running = job.status == JobStatus.RUNNING
    eta = f" | remaining {fmt_seconds(progress.eta_s)}" if running and progress.eta_s else ""
    skipped = f" | {progress.skipped} line(s) of the file skipped" if progress.skipped else ""
    extra = f"<div class='rt-error'>{esc(job.error)}</div>" if job.error and job.status != JobStatus.SUCCEEDED else ""
    return (f"<div id='eval-state' data-status='{esc(job.status)}' data-job='{esc(job.id)}' data-done='{done}' "
            f"data-total='{total}'><div><b>{label}</b> - evaluation <code>{esc(job.id)}</code></div>"
            f"<div class='rt-bar'><div style='width:{pct}%'></div></div>"
            f"<div>{done}/{total or '?'} answers ({pct}%){rate}{eta}{skipped}</div>{extra}</div>")


def _newest_run(ws) -> str | None:
    """The newest finished run, whether the screen's job or `ragtune eval` made it."""
    return next((r["run_id"] for r in list_runs(ws) if r["status"] == "succeeded"), None)


def evaluation_view(ws_name, shown_run):
    """The newest evaluation job: state, buttons, and its results once it succeeded (same for every browser)."""
    ws = open_ws(ws_name) if ws_name else None
    job = latest(ws, EVAL) if ws else None
    running = job is not None and job.status.running
    resumable = job is not None and job.status.resumable
    controls = (_state_html(job, evaluation_progress(job)), gr.update(interactive=running),
                gr.update(interactive=resumable), gr.update(interactive=not running))
    if job is not None and job.status == JobStatus.SUCCEEDED and job.id != shown_run and _newest_run(ws) == job.id:
        return (*controls, *show_run(ws, job.id), job.id, gr.update(interactive=True))
    return (*controls, *(gr.skip() for _ in range(6)))


def download_report(ws_name, run_id, fmt):
    if not run_id:
        raise BadInputError("Run an evaluation first.")
    return str(export_report(open_ws(ws_name), run_id, fmt=fmt))


def latest_run(ws_name):
    empty = (pd.DataFrame(columns=TABLE_COLUMNS), None, None,
             "No evaluation yet.", None, gr.update(interactive=False))
    if not ws_name:
        return empty
    ws = open_ws(ws_name)
    run_id = _newest_run(ws)
    if run_id is None:
        return empty
    try:
        return (*show_run(ws, run_id), run_id, gr.update(interactive=True))
    except Exception:  # noqa: BLE001 - an unfinished run: show nothing rather than an error on load
        return empty


# ------------------------------------------------------------------ arena

def new_battle(ctx, ws_name, question, variants, adapter):
    question = (question or "").strip()
    if not question:
        raise BadInputError("Type a question for the battle.")
    variants = list(variants or [])
    if len(variants) < 2:
        raise BadInputError("Pick at least two variants for the arena.")
    ws = open_ws(ws_name)
    battle = make_battle(ws, ctx.assistant(ws, variants), question, variants)
    votes = gr.update(interactive=True)
    return (battle["battle_id"], "#### Answer A\n\n" + battle["left_text"], "#### Answer B\n\n" + battle["right_text"],
            "Which answer is better?", votes, votes, votes, votes)


def vote(ws_name, battle_id, choice):
    if not battle_id:
        raise BadInputError("Start a battle first.")
    result = record_vote(open_ws(ws_name), battle_id, choice)
    reveal = ""
    if isinstance(result, dict) and result.get("left_variant"):
        reveal = f" Left was **{result['left_variant']}**, right was **{result.get('right_variant')}**."
    off = gr.update(interactive=False)
    return None, f"Vote recorded: {choice.replace('_', ' ')}.{reveal}", leaderboard_table(ws_name), off, off, off, off


def leaderboard_table(ws_name):
    rows = leaderboard(open_ws(ws_name)) if ws_name else []
    return pd.DataFrame([[r["variant"], round(r["rating"], 1), _r(r.get("ci_low")), _r(r.get("ci_high")), r["battles"]]
                         for r in rows], columns=["Variant", "Rating", "CI low", "CI high", "Battles"])


# ------------------------------------------------------------------ layout

VOTES = (("left", "A is better"), ("right", "B is better"), ("tie", "Tie"), ("both_bad", "Both are bad"))


class RunPanel:
    """What to evaluate (questions, variants, fine-tuned model, how many) and the job's buttons."""

    def __init__(self):
        gr.Markdown("Score each variant on questions with known answers. Intervals show how sure the numbers are.")
        with gr.Row():
            self.source = gr.Radio([QA_SAMPLE, QA_HELD_OUT, QA_UPLOAD], value=QA_SAMPLE, label="Questions",
                                   elem_id="eval-source")
            self.upload = gr.File(label="Questions file (JSONL/CSV)", visible=False, elem_id="eval-file")
        with gr.Row():
            self.variants = gr.CheckboxGroup(VARIANTS, value=["base", "rag"], label="Variants", elem_id="eval-variants")
            self.adapter = gr.Dropdown([("newest", "")], value="", label="Fine-tuned model", elem_id="eval-adapter")
            self.limit = gr.Number(value=10, precision=0, minimum=0, label="Questions to use (0 = all)",
                                   elem_id="eval-limit")
        with gr.Accordion("Advanced", open=False, elem_id="eval-advanced"):
            self.max_tokens = gr.Slider(16, 1024, value=256, step=16, label="Longest answer (tokens)",
                                        elem_id="eval-max-tokens")
        self.buttons = JobButtons("Run evaluation", start_id="eval-run", prefix="eval")

    @property
    def inputs(self) -> list:
        """start_evaluation's arguments after the workspace, in its order."""
        return [self.source, self.upload, self.variants, self.adapter, self.limit, self.max_tokens]


class ResultsPanel:
    """The job's state, then the newest finished run: recommendation, table, plots and its report."""

    def __init__(self):
        self.state = gr.HTML(elem_id="eval-status")
        self.recommendation = gr.Markdown(elem_id="eval-recommendation")
        self.table = gr.Dataframe(headers=TABLE_COLUMNS, label="Results (95% intervals)", interactive=False,
                                  elem_id="eval-table")
        with gr.Row():
            self.bars = gr.BarPlot(None, x="Variant", y="Mean", y_lim=[0, 1], height=260, elem_id="eval-bars")
            self.box = gr.Plot(label="Spread per question", elem_id="eval-box")
        self.run_id = gr.State(None)
        with gr.Row():
            self.fmt = gr.Radio(["html", "md"], value="html", label="Report format", scale=1)
            self.report_btn = gr.Button("Prepare report", interactive=False, elem_id="eval-report-btn", scale=1)
            self.report_file = gr.File(label="Report", interactive=False, elem_id="eval-report", scale=2)

    @property
    def results(self) -> list:
        """The outputs of show_run / latest_run, in their order."""
        return [self.table, self.bars, self.box, self.recommendation, self.run_id, self.report_btn]


class ArenaPanel:
    """The blind arena: a question, two hidden answers, the vote buttons and the leaderboard."""

    def __init__(self):
        gr.Markdown("### Blind arena\nTwo hidden variants answer the same question; vote for the better one.")
        with gr.Row():
            self.question = gr.Textbox(label="Question", elem_id="arena-question", scale=4)
            self.variants = gr.CheckboxGroup(VARIANTS, value=["base", "rag"], label="Variants in the arena",
                                             elem_id="arena-variants", scale=2)
            self.battle_btn = gr.Button("New battle", variant="primary", elem_id="arena-new", scale=1)
        with gr.Row(equal_height=False):
            self.left = gr.Markdown(elem_id="arena-left", container=True, label="Answer A")
            self.right = gr.Markdown(elem_id="arena-right", container=True, label="Answer B")
        self.message = gr.Markdown(elem_id="arena-message")
        with gr.Row():
            self.vote_btns = [gr.Button(label, interactive=False, elem_id=f"vote-{key.replace('_', '-')}")
                              for key, label in VOTES]
        self.board = gr.Dataframe(headers=["Variant", "Rating", "CI low", "CI high", "Battles"], label="Leaderboard",
                                  interactive=False, elem_id="arena-leaderboard")
        self.battle_id = gr.State(None)


def _wire_run(ctx, ws_select: gr.Dropdown, run: RunPanel, out: ResultsPanel) -> None:
    """The job's buttons and a 1-second timer, all showing evaluation_view; the report download."""
    run.source.change(lambda s: gr.update(visible=s == QA_UPLOAD), [run.source], [run.upload], show_progress="hidden")
    buttons = run.buttons
    view_outputs = [out.state, buttons.cancel, buttons.resume, buttons.start, *out.results]
    buttons.start.click(guarded(lambda *a: start_evaluation(ctx, *a)), [ws_select, *run.inputs], view_outputs,
                        api_visibility="private")
    buttons.cancel.click(guarded(cancel_evaluation), [ws_select, out.run_id], view_outputs, api_visibility="private")
    buttons.resume.click(guarded(resume_evaluation), [ws_select, out.run_id], view_outputs, api_visibility="private")
    gr.Timer(1.0).tick(refreshing(evaluation_view, view_outputs, "evaluation view"), [ws_select, out.run_id],
                       view_outputs, show_progress="hidden", api_visibility="private")
    out.report_btn.click(guarded(download_report), [ws_select, out.run_id, out.fmt], [out.report_file])


def _wire_arena(ctx, ws_select: gr.Dropdown, arena: ArenaPanel, adapter: gr.Dropdown) -> None:
    battle_outputs = [arena.battle_id, arena.left, arena.right, arena.message, *arena.vote_btns]
    arena.battle_btn.click(guarded(lambda *a: new_battle(ctx, *a)), [ws_select, arena.question, arena.variants, adapter],
                           battle_outputs, api_visibility="private")
    for btn, (key, _label) in zip(arena.vote_btns, VOTES):
        btn.click(guarded(lambda ws, b, key=key: vote(ws, b, key)), [ws_select, arena.battle_id],
                  [arena.battle_id, arena.message, arena.board, *arena.vote_btns], api_visibility="private")


def _wire_workspace(ws_select: gr.Dropdown, demo: gr.Blocks, out: ResultsPanel, arena: ArenaPanel,
                    adapter: gr.Dropdown) -> None:
    """On load and on a workspace change: its newest run, its leaderboard and its fine-tuned models."""
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(latest_run), [ws_select], out.results, show_progress="hidden")
        trigger(guarded(leaderboard_table), [ws_select], [arena.board], show_progress="hidden")
        trigger(guarded(lambda n: gr.update(choices=[("newest", "")] + [(a, a) for a in adapter_names(open_ws(n))] if n else [("newest", "")], value="")),
                [ws_select], [adapter], show_progress="hidden")


def _register_api(ctx) -> None:
    def evaluate(workspace: str, variants: list[str], limit: int = 5, source: str = QA_SAMPLE,
                 max_tokens: int = 256) -> dict:
        """Run an evaluation on the sample (or held-out) questions; returns the summary and recommendation.

        Same EvalConfig and service as the screen's job, run in this request on the app's loaded model.
        """
        ws = open_ws(workspace)
        config = eval_config(ctx, source, None, variants, None, limit, max_tokens)
        result = run_evaluation(ws, config, engine=ctx.engine(), assistant=ctx.assistant(ws))
        summary = summarize(result)
        return {"run_id": result.run_id, "summary": summary, "recommendation": summary["recommendation"]}

    gr.api(guarded(evaluate), api_name="eval")


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks) -> None:
    run = RunPanel()
    out = ResultsPanel()
    arena = ArenaPanel()
    _wire_run(ctx, ws_select, run, out)
    _wire_arena(ctx, ws_select, arena, run.adapter)
    _wire_workspace(ws_select, demo, out, arena, run.adapter)
    _register_api(ctx)
