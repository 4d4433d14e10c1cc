"""`ragtune eval`, `ragtune report` and `ragtune arena`: compare variants on questions with known answers."""

from __future__ import annotations

import sys

from evaluation.service import EvalConfig
from ragtune.config_args import add_dataclass_arguments, dataclass_from_args
from ragtune.errors import BadInputError
from ragtune.progress import progress_bar

from .common import add_json_arg, add_workspace_arg, open_workspace, print_json

TABLE_METRICS = ("token_f1", "semantic_similarity", "fact_hit", "exact_match", "judge_score", "groundedness",
                 "context_recall", "hit_at_k", "citation_accuracy", "refusal_rate", "latency_s", "e2e_tokens_per_s")


def _add_engine_args(p) -> None:
    p.add_argument("--engine", choices=["embedded", "vllm"], default="embedded",
                   help="embedded: transformers in this process; vllm: a vLLM server (default: %(default)s)")
    p.add_argument("--model", help="base model (default: gemma-3-270m)")
    p.add_argument("--url", help="use a vLLM server already running at this URL")
    p.add_argument("--max-tokens", type=int, default=256, help="longest answer in tokens (default: %(default)s)")


def register(sub) -> None:
    p = sub.add_parser("eval", help="score base / rag / ft / ft+rag on a test set, with intervals and a recommendation")
    add_workspace_arg(p)
    add_dataclass_arguments(p, EvalConfig)
    p.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run (only missing answers are computed)")
    p.add_argument("--report", choices=["md", "html"], help="also write a report with plots and a CSV of answers")
    p.add_argument("--detach", action="store_true",
                   help="run as a background job (as the app does) and return at once; follow it with "
                        "`ragtune jobs show JOB -f`")
    p.add_argument("--list", action="store_true", help="list this workspace's evaluation runs and exit")
    add_json_arg(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("report", help="export an evaluation run as Markdown or HTML with plots, plus answers.csv")
    add_workspace_arg(p)
    p.add_argument("run_id", nargs="?", help="run to export (default: the newest finished run)")
    p.add_argument("--format", choices=["md", "html"], default="md")
    add_json_arg(p)
    p.set_defaults(func=_report)

    p = sub.add_parser("arena", help="blind side-by-side comparison: battles, votes, Bradley-Terry leaderboard")
    a_sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = a_sub.add_parser("battle", help="two hidden variants answer one question")
    add_workspace_arg(b)
    b.add_argument("question")
    b.add_argument("--variants", default="base,rag", help="variants to draw two from (default: %(default)s)")
    _add_engine_args(b)
    add_json_arg(b)
    b.set_defaults(func=_battle)
    v = a_sub.add_parser("vote", help="vote on a battle: left, right, tie or both_bad")
    add_workspace_arg(v)
    v.add_argument("battle_id")
    v.add_argument("vote", choices=["left", "right", "tie", "both_bad"])
    add_json_arg(v)
    v.set_defaults(func=_vote)
    lb = a_sub.add_parser("leaderboard", help="Bradley-Terry ratings of all votes with 95%% intervals")
    add_workspace_arg(lb)
    add_json_arg(lb)
    lb.set_defaults(func=_leaderboard)


def _engine(args):
    from ragtune.models import DEFAULT_LLM
    from serving.factory import get_engine

    return get_engine(args.engine, model=args.model or DEFAULT_LLM, url=args.url)


def _eval(args):
    from evaluation.report import export_report
    from evaluation.runner import list_runs, new_run_id
    from evaluation.service import evaluate

    ws = open_workspace(args)
    if args.list:
        runs = list_runs(ws)
        if args.json:
            print_json(runs)
        for r in runs if not args.json else []:
            print(f"{r['run_id']}  {r['status']:<11} {r['answered']}/{r['expected']} answers  "
                  f"{','.join(r['variants'])}  {r.get('source') or ''}")
        return 0
    config = dataclass_from_args(EvalConfig, args).validate()
    if args.detach:
        from evaluation.service import start_evaluation

        job = start_evaluation(ws, config)
        if args.json:
            print_json(job.to_dict())
        else:
            print(f"started evaluation job {job.id}: follow it with `ragtune jobs show {job.id} -f -w {ws.name}`, "
                  f"cancel with `ragtune jobs cancel {job.id} -w {ws.name}`")
        return 0
    skipped: list = []

    def loaded(rows, errors, source):
        skipped.extend(errors)
        for line, reason in errors[:20]:
            print(f"skipped line {line}: {reason}", file=sys.stderr)
        if len(errors) > 20:
            print(f"... and {len(errors) - 20} more skipped lines", file=sys.stderr)

    run_id = args.resume or new_run_id()
    bar = progress_bar(unit="answer", desc="evaluating")

    def progress(done, total, label):
        bar.update_to(done, total, label)

    try:
        run = evaluate(ws, config, run_id=run_id, resume=bool(args.resume), progress=progress, on_loaded=loaded)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: every answer so far is saved; finish with `ragtune eval -w {ws.name} --resume {run_id}`",
              file=sys.stderr)
        return 130
    bar.close()
    summary = run.summary
    engine = run.config.get("engine")
    report = str(export_report(ws, run.run_id, args.report)) if args.report else None
    if args.json:
        out = {"run_id": run.run_id, "n": summary["n"], "computed": run.computed, "cached": run.cached,
               "engine": engine, "skipped_rows": [{"line": ln, "reason": r} for ln, r in skipped],
               "variants": {k: {"metrics": v["metrics"], "cost": v["cost"], "adapter": v["adapter"]}
                            for k, v in summary["variants"].items()},
               "paired": summary["paired"], "recommendation": summary["recommendation"]}
        if report:
            out["report"] = report
        print_json(out)
        return 0
    _print_summary(summary)
    print(f"\nrun {run.run_id} on the {engine} engine: {run.computed} answers generated, "
          f"{run.cached} reused from the cache")
    if report:
        print(f"report: {report}")
    if summary["recommendation"].get("verdict") != "neither":
        from evaluation.service import suggested_variant

        print(f"to publish it: `ragtune deployments publish {suggested_variant(ws)} -w {ws.name}`")
    return 0


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
    from evaluation.report import export_report
    from evaluation.runner import list_runs

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
    from evaluation.arena import new_battle
    from evaluation.assistants import make_assistant
    from serving.engine import SamplingOptions

    ws = open_workspace(args)
    variants = [v for v in args.variants.split(",") if v.strip()]
    assistant = make_assistant(ws, _engine(args))
    battle = new_battle(ws, assistant, args.question, variants, options=SamplingOptions(max_tokens=args.max_tokens))
    if args.json:
        print_json(battle)
    else:
        print(f"battle {battle['battle_id']}\n\n[left]\n{battle['left_text']}\n\n[right]\n{battle['right_text']}\n")
        print(f"vote: ragtune arena vote {battle['battle_id']} left|right|tie|both_bad")
    return 0


def _vote(args):
    from evaluation.arena import record_vote

    result = record_vote(open_workspace(args), args.battle_id, args.vote)
    if args.json:
        print_json(result)
    else:
        print(f"recorded '{args.vote}': left was {result['left_variant']}, right was {result['right_variant']}")
    return 0


def _leaderboard(args):
    from evaluation.arena import leaderboard

    board = leaderboard(open_workspace(args))
    if args.json:
        print_json(board)
    elif not board:
        print("no votes yet: `ragtune arena battle QUESTION --variants base,rag`")
    else:
        for r in board:
            print(f"{r['variant']:<16} {r['rating']:7.1f}  [{r['ci_low']:.0f}, {r['ci_high']:.0f}]  {r['battles']} battles")
    return 0
