"""`ragtune eval`, `ragtune report` and `ragtune arena`: compare variants on questions with known answers."""

from __future__ import annotations

import sys

from app.wiring import OPERATIONS
from evaluation.arena import leaderboard, new_battle, record_vote
from evaluation.assistants import make_assistant
from evaluation.report import export_report
from evaluation.runner import list_runs, new_run_id
from evaluation.service import EVAL, EvalConfig, EvalJobConfig, evaluate, suggested_variant
from ragtune.config_args import add_dataclass_arguments, dataclass_from_args
from ragtune.errors import BadInputError
from ragtune.progress import progress_bar
from serving.engine import SamplingOptions

from .common import add_actions, add_command, open_workspace, print_json
from .serving_cmds import add_engine_args, engine_from_args

TABLE_METRICS = ("token_f1", "semantic_similarity", "fact_hit", "exact_match", "judge_score", "groundedness",
                 "context_recall", "hit_at_k", "citation_accuracy", "refusal_rate", "latency_s", "e2e_tokens_per_s")


def register(sub) -> None:
    for add_group in (_register_eval, _register_arena):
        add_group(sub)


def _register_eval(sub) -> None:
    p = add_command(sub, "eval", _eval, detach=True, json=True,
                    help="score base / rag / ft / ft+rag on a test set, with intervals and a recommendation")
    add_dataclass_arguments(p, EvalConfig)
    p.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run (only missing answers are computed)")
    p.add_argument("--report", choices=["md", "html"], help="also write a report with plots and a CSV of answers")
    p.add_argument("--list", action="store_true", help="list this workspace's evaluation runs and exit")
    p = add_command(sub, "report", _report, json=True,
                    help="export an evaluation run as Markdown or HTML with plots, plus answers.csv")
    p.add_argument("run_id", nargs="?", help="run to export (default: the newest finished run)")
    p.add_argument("--format", choices=["md", "html"], default="md")


def _register_arena(sub) -> None:
    actions = add_actions(sub, "arena", help="blind side-by-side comparison: battles, votes, Bradley-Terry leaderboard")
    p = add_command(actions, "battle", _battle, help="two hidden variants answer one question", json=True)
    p.add_argument("question")
    p.add_argument("--variants", default="base,rag", help="variants to draw two from (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=256, help="longest answer in tokens (default: %(default)s)")
    add_engine_args(p)  # the engine flags of `ragtune ask` and `ragtune deploy`
    p = add_command(actions, "vote", _vote, help="vote on a battle: left, right, tie or both_bad", json=True)
    p.add_argument("battle_id")
    p.add_argument("vote", choices=["left", "right", "tie", "both_bad"])
    add_command(actions, "leaderboard", _leaderboard, json=True,
                help="Bradley-Terry ratings of all votes with 95%% intervals")


def _eval(args):
    ws = open_workspace(args)
    if args.list:
        return _list_runs(ws, args)
    config = dataclass_from_args(EvalConfig, args).validate()
    if args.detach:
        return _start_detached(ws, config, args)
    skipped: list = []
    run = _evaluate_here(ws, config, args, skipped)
    if run is None:
        return 130
    report = str(export_report(ws, run.run_id, args.report)) if args.report else None
    if args.json:
        print_json(_eval_result(run, skipped, report))
    else:
        _print_eval_result(ws, run, report)
    return 0


def _list_runs(ws, args) -> int:
    runs = list_runs(ws)
    if args.json:
        print_json(runs)
        return 0
    for r in runs:
        print(f"{r['run_id']}  {r['status']:<11} {r['answered']}/{r['expected']} answers  "
              f"{','.join(r['variants'])}  {r.get('source') or ''}")
    return 0


def _start_detached(ws, config: EvalConfig, args) -> int:
    job = OPERATIONS.start(ws, EVAL, EvalJobConfig.of(config))
    if args.json:
        print_json(job.to_dict())
    else:
        print(f"started evaluation job {job.id}: follow it with `ragtune jobs show {job.id} -f -w {ws.name}`, "
              f"cancel with `ragtune jobs cancel {job.id} -w {ws.name}`")
    return 0


def _evaluate_here(ws, config: EvalConfig, args, skipped: list):
    """Run the evaluation in this process under a progress bar; the lines of the questions file that were
    skipped go to stderr and into ``skipped``. None when Ctrl-C stopped it (every answer so far is saved)."""
    def loaded(rows, errors, source):
        skipped.extend(errors)
        for line, reason in errors[:20]:
            print(f"skipped line {line}: {reason}", file=sys.stderr)
        if len(errors) > 20:
            print(f"... and {len(errors) - 20} more skipped lines", file=sys.stderr)

    run_id = args.resume or new_run_id()
    bar = progress_bar(unit="answer", desc="evaluating")
    try:
        run = evaluate(ws, config, run_id=run_id, resume=bool(args.resume), progress=bar.update_to, on_loaded=loaded)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: every answer so far is saved; finish with `ragtune eval -w {ws.name} --resume {run_id}`",
              file=sys.stderr)
        return None
    bar.close()
    return run


def _eval_result(run, skipped: list, report: str | None) -> dict:
    summary = run.summary
    out = {"run_id": run.run_id, "n": summary["n"], "computed": run.computed, "cached": run.cached,
           "engine": run.config.get("engine"), "skipped_rows": [{"line": ln, "reason": r} for ln, r in skipped],
           "variants": {k: {"metrics": v["metrics"], "cost": v["cost"], "adapter": v["adapter"]}
                        for k, v in summary["variants"].items()},
           "paired": summary["paired"], "recommendation": summary["recommendation"]}
    if report:
        out["report"] = report
    return out


def _print_eval_result(ws, run, report: str | None) -> None:
    _print_summary(run.summary)
    print(f"\nrun {run.run_id} on the {run.config.get('engine')} engine: {run.computed} answers generated, "
          f"{run.cached} reused from the cache")
    if report:
        print(f"report: {report}")
    if run.summary["recommendation"].get("verdict") != "neither":
        print(f"to publish it: `ragtune deployments publish {suggested_variant(ws)} -w {ws.name}`")


def _print_summary(summary: dict) -> None:
    variants = list(summary["variants"])
    width = 24
    print(f"{summary['n']} questions; mean [95% CI]")
    print("metric".ljust(22) + "".join(v.ljust(width) for v in variants))
    for metric in TABLE_METRICS:
        cells = []
        for v in variants:
            m = summary["variants"][v]["metrics"].get(metric)
            cells.append("-" if not m or m["mean"] is None else f"{m['mean']:.3f} [{m['ci_low']:.2f},{m['ci_high']:.2f}]")
        if any(c != "-" for c in cells):
            print(metric.ljust(22) + "".join(c.ljust(width) for c in cells))
    print()
    print(summary["recommendation"]["text"])


def _report(args):
    ws = open_workspace(args)
    run_id = args.run_id
    if not run_id:
        done = [r for r in list_runs(ws) if r["status"] == "succeeded"]
        if not done:
            raise BadInputError(f"Workspace '{ws.name}' has no finished evaluation run: run `ragtune eval` first.")
        run_id = done[0]["run_id"]
    path = export_report(ws, run_id, args.format)
    if args.json:
        print_json({"run_id": run_id, "report": str(path), "answers_csv": str(path.parent / "answers.csv")})
    else:
        print(path)
    return 0


def _battle(args):
    ws = open_workspace(args)
    variants = [v for v in args.variants.split(",") if v.strip()]
    assistant = make_assistant(ws, engine_from_args(args))
    battle = new_battle(ws, assistant, args.question, variants, options=SamplingOptions(max_tokens=args.max_tokens))
    if args.json:
        print_json(battle)
    else:
        print(f"battle {battle['battle_id']}\n\n[left]\n{battle['left_text']}\n\n[right]\n{battle['right_text']}\n")
        print(f"vote: ragtune arena vote {battle['battle_id']} left|right|tie|both_bad")
    return 0


def _vote(args):
    result = record_vote(open_workspace(args), args.battle_id, args.vote)
    if args.json:
        print_json(result)
    else:
        print(f"recorded '{args.vote}': left was {result['left_variant']}, right was {result['right_variant']}")
    return 0


def _leaderboard(args):
    board = leaderboard(open_workspace(args))
    if args.json:
        print_json(board)
    elif not board:
        print("no votes yet: `ragtune arena battle QUESTION --variants base,rag`")
    else:
        for r in board:
            print(f"{r['variant']:<16} {r['rating']:7.1f}  [{r['ci_low']:.0f}, {r['ci_high']:.0f}]  {r['battles']} battles")
    return 0
