"""Evaluate tab: run a scored comparison of variants, show intervals and plots, the recommendation,
the blind arena with a leaderboard, and the report download."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ragtune.errors import BadInputError

from .common import VARIANTS, adapter_names, guarded, open_ws, sample_questions_path

QA_HELD_OUT = "Held-out questions of the newest training set"
QA_SAMPLE = "Sample questions (Lumora Robotics demo)"
QA_UPLOAD = "My own file"
TABLE_COLUMNS = ["Variant", "Metric", "Mean", "95% CI low", "95% CI high", "Answers"]
HEADLINE_METRICS = ("token_f1", "semantic_similarity", "fact_hit", "groundedness", "hit_at_k", "citation_accuracy",
                    "latency_s")


def load_questions(ws, source, upload) -> tuple[list[dict], str]:
    from evaluation.qa_sets import held_out_rows, load_qa_file

    if source == QA_HELD_OUT:
        return held_out_rows(ws)
    if source == QA_UPLOAD:
        if not upload:
            raise BadInputError("Choose a questions file (JSONL or CSV with question and answer).")
        path = Path(upload if isinstance(upload, str) else upload.name)
    else:
        path = sample_questions_path()
    rows, errors = load_qa_file(path)
    if not rows:
        first = f" First problem: line {errors[0][0]}: {errors[0][1]}" if errors else ""
        raise BadInputError(f"No usable questions in {path.name}.{first}")
    if errors:
        gr.Warning(f"{len(errors)} line(s) of {path.name} were skipped (e.g. line {errors[0][0]}: {errors[0][1]}).")
    return rows, path.name


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


def run_evaluation(ctx, ws_name, source, upload, variants, adapter, limit, max_tokens, progress=gr.Progress()):
    from evaluation.runner import run_eval
    from serving.engine import SamplingOptions

    ws = open_ws(ws_name)
    variants = [v for v in (variants or []) if v]
    if not variants:
        raise BadInputError("Pick at least one variant to evaluate.")
    rows, label = load_questions(ws, source, upload)
    if limit and int(limit) > 0:
        rows = rows[: int(limit)]
    progress(0, desc="Loading the model...")
    engine = ctx.engine()
    if any(v.endswith("rag") for v in variants):
        ctx.retriever(ws)  # a clear "build the index first" before any answer is generated

    def report(done, total, *rest):
        progress((done, total), desc=f"Answering question {done}/{total}")

    run = run_eval(ws, rows, variants, engine, adapter=adapter or None, progress=report, source=label,
                   assistant=ctx.assistant(ws), model=ctx.model, options=SamplingOptions(max_tokens=int(max_tokens)))
    run_id = run.run_id
    gr.Info(f"Evaluation {run_id} finished: {len(rows)} questions from {label}.")
    return (*show_run(ws, run_id), run_id, gr.update(interactive=True))


def download_report(ws_name, run_id, fmt):
    from evaluation.report import export_report

    if not run_id:
        raise BadInputError("Run an evaluation first.")
    return str(export_report(open_ws(ws_name), run_id, fmt=fmt))


def latest_run(ws_name):
    from evaluation.runner import list_runs

    empty = (pd.DataFrame(columns=TABLE_COLUMNS), None, None,
             "No evaluation yet.", None, gr.update(interactive=False))
    if not ws_name:
        return empty
    ws = open_ws(ws_name)
    runs = list_runs(ws)
    if not runs:
        return empty
    run_id = next((r["run_id"] for r in runs if r["status"] == "succeeded"), None)
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
    run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
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
    run_fn = guarded(lambda *a, progress=gr.Progress(): run_evaluation(ctx, *a, progress=progress))
    run_btn.click(run_fn, [ws_select, source, upload, variants, adapter, limit, max_tokens],
                  [table, bars, box, recommendation, run_id, report_btn], api_visibility="private")
    report_btn.click(guarded(download_report), [ws_select, run_id, fmt], [report_file])
    battle_btn.click(guarded(lambda *a: new_battle(ctx, *a)), [ws_select, arena_q, arena_variants, adapter],
                     [battle_id, left, right, arena_msg, *vote_btns], api_visibility="private")
    for btn, key in zip(vote_btns, ("left", "right", "tie", "both_bad")):
        btn.click(guarded(lambda ws, b, key=key: vote(ws, b, key)), [ws_select, battle_id],
                  [battle_id, arena_msg, board, *vote_btns], api_visibility="private")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(latest_run), [ws_select], [table, bars, box, recommendation, run_id, report_btn],
                show_progress="hidden")
        trigger(guarded(leaderboard_table), [ws_select], [board], show_progress="hidden")
        trigger(guarded(lambda n: gr.update(choices=[("newest", "")] + [(a, a) for a in adapter_names(open_ws(n))] if n else [("newest", "")], value="")),
                [ws_select], [adapter], show_progress="hidden")

    def evaluate(workspace: str, variants: list[str], limit: int = 5, source: str = QA_SAMPLE,
                 max_tokens: int = 256) -> dict:
        """Run an evaluation on the sample (or held-out) questions; returns the summary and recommendation."""
        from evaluation.recommend import recommend
        from evaluation.runner import run_eval, summarize

        ws = open_ws(workspace)
        rows, _ = load_questions(ws, source, None)
        from serving.engine import SamplingOptions

        run = run_eval(ws, rows[: int(limit)] if limit else rows, list(variants), ctx.engine(),
                       assistant=ctx.assistant(ws), model=ctx.model, source=source,
                       options=SamplingOptions(max_tokens=int(max_tokens)))
        summary = summarize(run)
        return {"run_id": run.run_id, "summary": summary, "recommendation": summary.get("recommendation") or recommend(summary)}

    gr.api(guarded(evaluate), api_name="eval")
