"""Evaluate tab: run a scored comparison of variants, show intervals and plots, the recommendation,
the blind arena with a leaderboard, and the report download."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from evaluation.service import HELD_OUT, SAMPLE, EvalConfig
from ragtune.errors import BadInputError
from ragtune.jobs import JobStatus

from .common import VARIANTS, adapter_names, esc, fmt_seconds, guarded, log, open_ws

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
    from evaluation.store import run_results

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
    from evaluation.recommend import recommend
    from evaluation.runner import load_run, summarize

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
    from evaluation.service import start_evaluation as start

    ws = open_ws(ws_name)
    config = eval_config(ctx, source, upload, variants, adapter, limit, max_tokens)
    if config.retrieves:
        ctx.retriever(ws)  # a clear "build the index first" before the job starts
    job = start(ws, config)
    gr.Info(f"Evaluation {job.id} started. You can leave or reload this page; it keeps running.")
    return evaluation_view(ws_name, None)


def cancel_evaluation(ws_name, _shown=None):
    from evaluation.service import cancel_evaluation as cancel, latest_evaluation

    ws = open_ws(ws_name)
    job = latest_evaluation(ws)
    if job is None or job.finished:
        raise BadInputError("No evaluation is running.")
    cancel(ws, job.id)
    gr.Info("Cancelling: the evaluation stops after the current answer; every answer so far is kept.")
    return evaluation_view(ws_name, _shown)


def resume_evaluation(ws_name, _shown=None):
    from evaluation.service import latest_evaluation, resume_evaluation as resume

    ws = open_ws(ws_name)
    job = latest_evaluation(ws)
    if job is None or not job.status.resumable:
        raise BadInputError("There is no stopped evaluation to resume.")
    resume(ws, job.id)
    gr.Info(f"Resuming evaluation {job.id}: only the missing answers are computed.")
    return evaluation_view(ws_name, _shown)


def _state_html(job, progress: dict) -> str:
    if job is None:
        return "<div id='eval-state' data-status='none'>No evaluation started in this workspace yet.</div>"
    done, total = progress["done"], progress["total"]
    pct = min(100, int(100 * done / total)) if total else 0
    starting = job.status == JobStatus.RUNNING and not total
    label = "Starting (loading the model and the questions)" if starting else {
        JobStatus.RUNNING: "Answering", JobStatus.SUCCEEDED: "Finished", JobStatus.FAILED: "Failed",
        JobStatus.CANCELLED: "Cancelled", JobStatus.STOPPED: "Stopped", JobStatus.QUEUED: "Starting"}[job.status]
    rate = f" | {progress['rate']:.2f} answers/s" if progress.get("rate") else ""
    running = job.status == JobStatus.RUNNING
    eta = f" | remaining {fmt_seconds(progress['eta_s'])}" if running and progress.get("eta_s") else ""
    skipped = f" | {progress['skipped']} line(s) of the file skipped" if progress.get("skipped") else ""
    extra = f"<div class='rt-error'>{esc(job.error)}</div>" if job.error and job.status != JobStatus.SUCCEEDED else ""
    return (f"<div id='eval-state' data-status='{esc(job.status)}' data-job='{esc(job.id)}' data-done='{done}' "
            f"data-total='{total}'><div><b>{label}</b> - evaluation <code>{esc(job.id)}</code></div>"
            f"<div class='rt-bar'><div style='width:{pct}%'></div></div>"
            f"<div>{done}/{total or '?'} answers ({pct}%){rate}{eta}{skipped}</div>{extra}</div>")


def _newest_run(ws) -> str | None:
    """The newest finished run, whether the screen's job or `ragtune eval` made it."""
    from evaluation.runner import list_runs

    return next((r["run_id"] for r in list_runs(ws) if r["status"] == "succeeded"), None)


def evaluation_view(ws_name, shown_run):
    """The newest evaluation job: state, buttons, and its results once it succeeded (same for every browser)."""
    from evaluation.service import evaluation_progress, latest_evaluation

    ws = open_ws(ws_name) if ws_name else None
    job = latest_evaluation(ws) if ws else None
    running = job is not None and job.status.running
    resumable = job is not None and job.status.resumable
    controls = (_state_html(job, evaluation_progress(job)), gr.update(interactive=running),
                gr.update(interactive=resumable), gr.update(interactive=not running))
    if job is not None and job.status == JobStatus.SUCCEEDED and job.id != shown_run and _newest_run(ws) == job.id:
        return (*controls, *show_run(ws, job.id), job.id, gr.update(interactive=True))
    return (*controls, *(gr.skip() for _ in range(6)))


def download_report(ws_name, run_id, fmt):
    from evaluation.report import export_report

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
    from evaluation.arena import new_battle as make_battle

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
    from evaluation.arena import record_vote

    if not battle_id:
        raise BadInputError("Start a battle first.")
    result = record_vote(open_ws(ws_name), battle_id, choice)
    reveal = ""
    if isinstance(result, dict) and result.get("left_variant"):
        reveal = f" Left was **{result['left_variant']}**, right was **{result.get('right_variant')}**."
    off = gr.update(interactive=False)
    return None, f"Vote recorded: {choice.replace('_', ' ')}.{reveal}", leaderboard_table(ws_name), off, off, off, off


def leaderboard_table(ws_name):
    from evaluation.arena import leaderboard

    rows = leaderboard(open_ws(ws_name)) if ws_name else []
    return pd.DataFrame([[r["variant"], round(r["rating"], 1), _r(r.get("ci_low")), _r(r.get("ci_high")), r["battles"]]
                         for r in rows], columns=["Variant", "Rating", "CI low", "CI high", "Battles"])


# ------------------------------------------------------------------ layout

def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks) -> None:
    gr.Markdown("Score each variant on questions with known answers. Intervals show how sure the numbers are.")
    with gr.Row():
        source = gr.Radio([QA_SAMPLE, QA_HELD_OUT, QA_UPLOAD], value=QA_SAMPLE, label="Questions", elem_id="eval-source")
        upload = gr.File(label="Questions file (JSONL/CSV)", visible=False, elem_id="eval-file")
    with gr.Row():
        variants = gr.CheckboxGroup(VARIANTS, value=["base", "rag"], label="Variants", elem_id="eval-variants")
        adapter = gr.Dropdown([("newest", "")], value="", label="Fine-tuned model", elem_id="eval-adapter")
        limit = gr.Number(value=10, precision=0, minimum=0, label="Questions to use (0 = all)", elem_id="eval-limit")
    with gr.Accordion("Advanced", open=False, elem_id="eval-advanced"):
        max_tokens = gr.Slider(16, 1024, value=256, step=16, label="Longest answer (tokens)", elem_id="eval-max-tokens")
    with gr.Row():
        run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
        cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="eval-cancel")
        resume_btn = gr.Button("Resume", interactive=False, elem_id="eval-resume")
    state = gr.HTML(elem_id="eval-status")
    recommendation = gr.Markdown(elem_id="eval-recommendation")
    table = gr.Dataframe(headers=TABLE_COLUMNS, label="Results (95% intervals)", interactive=False, elem_id="eval-table")
    with gr.Row():
        bars = gr.BarPlot(None, x="Variant", y="Mean", y_lim=[0, 1],
                          height=260, elem_id="eval-bars")
        box = gr.Plot(label="Spread per question", elem_id="eval-box")
    run_id = gr.State(None)
    with gr.Row():
        fmt = gr.Radio(["html", "md"], value="html", label="Report format", scale=1)
        report_btn = gr.Button("Prepare report", interactive=False, elem_id="eval-report-btn", scale=1)
        report_file = gr.File(label="Report", interactive=False, elem_id="eval-report", scale=2)

    gr.Markdown("### Blind arena\nTwo hidden variants answer the same question; vote for the better one.")
    with gr.Row():
        arena_q = gr.Textbox(label="Question", elem_id="arena-question", scale=4)
        arena_variants = gr.CheckboxGroup(VARIANTS, value=["base", "rag"], label="Variants in the arena",
                                          elem_id="arena-variants", scale=2)
        battle_btn = gr.Button("New battle", variant="primary", elem_id="arena-new", scale=1)
    with gr.Row(equal_height=False):
        left = gr.Markdown(elem_id="arena-left", container=True, label="Answer A")
        right = gr.Markdown(elem_id="arena-right", container=True, label="Answer B")
    arena_msg = gr.Markdown(elem_id="arena-message")
    with gr.Row():
        vote_btns = [gr.Button(label, interactive=False, elem_id=f"vote-{key.replace('_', '-')}")
                     for key, label in (("left", "A is better"), ("right", "B is better"), ("tie", "Tie"),
                                        ("both_bad", "Both are bad"))]
    board = gr.Dataframe(headers=["Variant", "Rating", "CI low", "CI high", "Battles"], label="Leaderboard",
                         interactive=False, elem_id="arena-leaderboard")
    battle_id = gr.State(None)

    source.change(lambda s: gr.update(visible=s == QA_UPLOAD), [source], [upload], show_progress="hidden")
    results = [table, bars, box, recommendation, run_id, report_btn]
    view_outputs = [state, cancel_btn, resume_btn, run_btn, *results]
    run_btn.click(guarded(lambda *a: start_evaluation(ctx, *a)),
                  [ws_select, source, upload, variants, adapter, limit, max_tokens], view_outputs,
                  api_visibility="private")
    cancel_btn.click(guarded(cancel_evaluation), [ws_select, run_id], view_outputs, api_visibility="private")
    resume_btn.click(guarded(resume_evaluation), [ws_select, run_id], view_outputs, api_visibility="private")

    def tick(ws_name, shown):
        try:
            return evaluation_view(ws_name, shown)
        except Exception:  # noqa: BLE001 - a toast every second would drown the page; the next tick retries
            log.debug("evaluation view refresh failed", exc_info=True)
            return tuple(gr.skip() for _ in view_outputs)

    gr.Timer(1.0).tick(tick, [ws_select, run_id], view_outputs, show_progress="hidden", api_visibility="private")
    report_btn.click(guarded(download_report), [ws_select, run_id, fmt], [report_file])
    battle_btn.click(guarded(lambda *a: new_battle(ctx, *a)), [ws_select, arena_q, arena_variants, adapter],
                     [battle_id, left, right, arena_msg, *vote_btns], api_visibility="private")
    for btn, key in zip(vote_btns, ("left", "right", "tie", "both_bad")):
        btn.click(guarded(lambda ws, b, key=key: vote(ws, b, key)), [ws_select, battle_id],
                  [battle_id, arena_msg, board, *vote_btns], api_visibility="private")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(latest_run), [ws_select], results, show_progress="hidden")
        trigger(guarded(leaderboard_table), [ws_select], [board], show_progress="hidden")
        trigger(guarded(lambda n: gr.update(choices=[("newest", "")] + [(a, a) for a in adapter_names(open_ws(n))] if n else [("newest", "")], value="")),
                [ws_select], [adapter], show_progress="hidden")

    def evaluate(workspace: str, variants: list[str], limit: int = 5, source: str = QA_SAMPLE,
                 max_tokens: int = 256) -> dict:
        """Run an evaluation on the sample (or held-out) questions; returns the summary and recommendation.

        Same EvalConfig and service as the screen's job, run in this request on the app's loaded model.
        """
        from evaluation.runner import summarize
        from evaluation.service import evaluate as run

        ws = open_ws(workspace)
        config = eval_config(ctx, source, None, variants, None, limit, max_tokens)
        result = run(ws, config, engine=ctx.engine(), assistant=ctx.assistant(ws))
        summary = summarize(result)
        return {"run_id": result.run_id, "summary": summary, "recommendation": summary["recommendation"]}

    gr.api(guarded(evaluate), api_name="eval")
