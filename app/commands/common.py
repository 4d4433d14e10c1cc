"""Options and helpers shared by every command."""

from __future__ import annotations

import argparse
import json
import os
import sys

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
