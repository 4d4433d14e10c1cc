"""An evaluation as a background job: ``python -m evaluation.job --workspace W --qa FILE ... --job-dir D``.

The UI starts it with ``start_eval_job`` and tails its log; it survives app restarts, and
``resume_eval_job`` restarts it in place: the run id is fixed up front, so the restarted
process finds the answers already stored and computes only the rest.
"""

from __future__ import annotations

import argparse

from ragtune.atomic import atomic_write_jsonl
from ragtune.jobs import Job, JobReporter, get_job, start_job

JOB_KIND = "eval"


def start_eval_job(ws, *, rows: list[dict] | None = None, qa_file: str | None = None, variants="base,rag",
                   adapter: str | None = None, engine: str = "embedded", model: str | None = None,
                   url: str | None = None, limit: int | None = None, max_tokens: int = 256, k: int | None = None,
                   judge_url: str | None = None, judge_model: str | None = None) -> Job:
    """Start an evaluation in its own process; rows typed in the UI are saved to a file first."""
    from .runner import new_run_id

    run_id = new_run_id()
    if rows is not None:
        qa_file = str(atomic_write_jsonl(ws.path("evals", f"{run_id}.jsonl"), rows))
    if not qa_file:
        qa_file = "held-out"
    if not isinstance(variants, str):
        variants = ",".join(variants)
    args = ["--workspace", str(ws.root), "--qa", qa_file, "--variants", variants, "--engine", engine,
            "--run-id", run_id, "--max-tokens", str(max_tokens)]
    for flag, value in (("--adapter", adapter), ("--model", model), ("--url", url), ("--limit", limit), ("--k", k),
                        ("--judge-url", judge_url), ("--judge-model", judge_model)):
        if value is not None:
            args += [flag, str(value)]
    return start_job(ws, JOB_KIND, "evaluation.job", args, config={"run_id": run_id, "args": args}, job_id=run_id)


def resume_eval_job(ws, job_id: str) -> Job:
    job = get_job(ws, job_id)
    args = job.config["args"]
    return start_job(ws, JOB_KIND, "evaluation.job", args, config=job.config, job_id=job_id)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.job")
    p.add_argument("--workspace", required=True)
    p.add_argument("--qa", required=True, help="test set file, or 'held-out' for the generated test split")
    p.add_argument("--variants", default="base,rag")
    p.add_argument("--adapter")
    p.add_argument("--engine", default="embedded", choices=["embedded", "vllm"])
    p.add_argument("--model")
    p.add_argument("--url")
    p.add_argument("--limit", type=int)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--k", type=int)
    p.add_argument("--run-id", required=True)
    p.add_argument("--judge-url")
    p.add_argument("--judge-model")
    p.add_argument("--job-dir", required=True)
    return p


def load_rows(ws, qa: str, limit: int | None) -> tuple[list[dict], list[tuple[int, str]], str]:
    from .qa_sets import held_out_rows, load_qa_file

    if qa in ("held-out", "heldout", "test-split"):
        rows, source = held_out_rows(ws)
        errors = []
    else:
        rows, errors = load_qa_file(qa)
        source = qa
    if limit:
        rows = rows[:limit]
    return rows, errors, source


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with JobReporter(args.job_dir) as rep:
        from ragtune.models import DEFAULT_LLM
        from ragtune.workspace import Workspace
        from serving.engine import SamplingOptions
        from serving.factory import get_engine

        from .judge import JudgeConfig
        from .runner import run_eval

        ws = Workspace.open(args.workspace)
        rows, errors, source = load_rows(ws, args.qa, args.limit)
        rep.log(event="loaded", rows=len(rows), skipped=[{"line": ln, "reason": r} for ln, r in errors])
        engine = get_engine(args.engine, model=args.model or DEFAULT_LLM, url=args.url)
        judge = JudgeConfig(args.judge_url, args.judge_model) if args.judge_url and args.judge_model else None

        def progress(done, total, label):
            rep.check_cancel()
            rep.log(step=done, total_steps=total, label=label)

        run = run_eval(ws, rows, args.variants, engine, adapter=args.adapter, progress=progress, run_id=args.run_id,
                       judge=judge, options=SamplingOptions(max_tokens=args.max_tokens), k=args.k, source=source,
                       concurrency=4 if args.engine == "vllm" else 1)
        rep.result = {"run_id": run.run_id, "computed": run.computed, "cached": run.cached,
                      "recommendation": run.summary["recommendation"]}


if __name__ == "__main__":
    main()
