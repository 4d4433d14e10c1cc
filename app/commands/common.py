"""Options and helpers shared by every command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Iterable

from app.wiring import OPERATIONS
from ragtune.progress import PhaseProgress
from ragtune.workspace import Workspace

DEFAULT_WORKSPACE = "default"


def add_workspace_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace", "-w",
        default=os.environ.get("RAGTUNE_WORKSPACE", DEFAULT_WORKSPACE),
        help="workspace name (under $RAGTUNE_HOME/workspaces) or folder (default: %(default)s; env RAGTUNE_WORKSPACE)",
    )


def open_workspace(args, create: bool = False) -> Workspace:
    return Workspace.open(args.workspace, create=create)


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON result")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def local_time(timestamp: float | None, never: str = "never") -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else never


def add_detach_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", action="store_true",
                        help="run as a background job and return at once (`ragtune jobs show ID -f` follows it)")


def add_command(sub, name: str, func: Callable, *, help: str, workspace: bool = True, detach: bool = False,
                json: bool = False, **parser_kwargs) -> argparse.ArgumentParser:
    """A subcommand that runs ``func``, with the flags every command spells the same way: ``-w/--workspace``
    (unless ``workspace=False``), ``--detach`` and ``--json`` where asked. Returns the parser for the
    command's own arguments."""
    parser = sub.add_parser(name, help=help, **parser_kwargs)
    if workspace:
        add_workspace_arg(parser)
    if detach:
        add_detach_arg(parser)
    if json:
        add_json_arg(parser)
    parser.set_defaults(func=func)
    return parser


def add_actions(sub, name: str, *, help: str):
    """A command made of actions (``ragtune adapters list|delete|merge``): the subparsers of its actions."""
    return sub.add_parser(name, help=help).add_subparsers(dest="action", metavar="ACTION", required=True)


def print_list(args, items: Iterable, line: Callable[[object], str], *, empty: str) -> int:
    """A listing command's output: the items as JSON with ``--json``, else one line each (``empty`` when none)."""
    items = list(items)
    if args.json:
        print_json([item.to_dict() if hasattr(item, "to_dict") else item for item in items])
        return 0
    if not items:
        print(empty)
    for item in items:
        print(line(item))
    return 0


def run_operation(ws, op, config, args, *, desc: str, unit: str):
    """Run a ``ragtune.operations`` operation here (a bar, or a line every 10 s when redirected), or with
    ``--detach`` start it as a job; either way it is a job `ragtune jobs list/show/cancel/resume` knows.
    Returns the Job; a cancelled or failed one has been reported on stderr with the command that resumes it."""
    if getattr(args, "detach", False):
        job = OPERATIONS.start(ws, op, config)
        if getattr(args, "json", False):
            print_json(job.to_dict())
        else:
            print(f"started {op.kind} job {job.id}; follow it with `ragtune jobs show {job.id} -f -w {ws.name}`, "
                  f"cancel it with `ragtune jobs cancel {job.id} -w {ws.name}`")
        return job
    bar = PhaseProgress(desc, unit=unit, disable=getattr(args, "json", False))
    try:
        job = OPERATIONS.run_here(ws, op, config, echo=bar)
    finally:
        bar.close()
    if job.status != "succeeded":
        print(f"{op.kind} job {job.id} {job.status}: {job.error}", file=sys.stderr)
        if job.status.resumable:
            print(resume_hint(job, ws), file=sys.stderr)
    return job


def resume_hint(job, ws) -> str:
    """For a job that ended resumable: the command that resumes it, or why its kind does not resume."""
    refusal = OPERATIONS.refuses_resume(job)
    return f"it does not resume: {refusal}" if refusal else f"resume with `ragtune jobs resume {job.id} -w {ws.name}`"
