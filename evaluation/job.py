"""The evaluation job process: ``python -m evaluation.job --workspace W --run-id R [EvalConfig flags] --job-dir D``.

Started by ``evaluation.service.start_evaluation`` (the UI); it runs ``evaluation.service.evaluate``,
appending ``step``/``total_steps``/rate/ETA rows to the job's log.jsonl, and stops at the next
answer when cancelled. ``--resume`` finishes the stored run: only the missing answers are computed.
"""

from __future__ import annotations

import argparse
import time

from ragtune.config_args import add_dataclass_arguments, dataclass_from_args
from ragtune.jobs import JobReporter

from .service import EvalConfig, evaluate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.job")
    p.add_argument("--workspace", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--resume", action="store_true", help="finish the stored run under --run-id")
    p.add_argument("--job-dir", required=True)
    add_dataclass_arguments(p, EvalConfig)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with JobReporter(args.job_dir) as rep:
        from ragtune.workspace import Workspace

        ws = Workspace.open(args.workspace)
        config = dataclass_from_args(EvalConfig, args)
        started = time.time()
        first: list[int] = []

        def loaded(rows, skipped, source):
            rep.log(event="loaded", rows=len(rows) if rows is not None else None, source=source,
                    skipped=[{"line": ln, "reason": r} for ln, r in skipped])

        def progress(done, total, label):
            rep.check_cancel()
            if not first:
                first.append(done)  # answers already stored when this process started (resume)
            elapsed = time.time() - started
            fresh = done - first[0]
            rate = fresh / elapsed if elapsed > 0 and fresh else None
            rep.log(step=done, total_steps=total, label=label, elapsed_s=round(elapsed, 1),
                    rate=round(rate, 3) if rate else None,
                    eta_s=round((total - done) / rate, 1) if rate else None)

        run = evaluate(ws, config, run_id=args.run_id, resume=args.resume, progress=progress, on_loaded=loaded)
        engine = run.config.get("engine")
        rep.result = {"run_id": run.run_id, "computed": run.computed, "cached": run.cached, "engine": engine,
                      "recommendation": run.summary["recommendation"]}


if __name__ == "__main__":
    main()
