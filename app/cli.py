"""The `ragtune` command line: a thin layer over the library, one module per group of commands.

Each module in ``app.commands`` exposes ``register(subparsers)``, adding its subcommands with
``set_defaults(func=...)``. A command returns an exit code (or None for 0).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ragtune.errors import RagtuneError

COMMAND_MODULES = [
    "app.commands.workspace_cmds",
    "app.commands.retrieval_cmds",
    "app.commands.serving_cmds",
    "app.commands.training_cmds",
    "app.commands.eval_cmds",
    "app.commands.app_cmd",
    "app.commands.deploy_cmds",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Teach a model your documents by retrieval (RAG), fine-tuning (LoRA/QLoRA) or both; "
        "compare them, then deploy the winner. Everything runs on this machine.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except RagtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
