"""`ragtune workspace ...` and `ragtune models ...`."""

from __future__ import annotations

from ragtune import models
from ragtune.workspace import Workspace, list_workspaces

from .common import add_json_arg, print_json


def register(sub) -> None:
    ws = sub.add_parser("workspace", help="create, list, rename or delete workspaces")
    ws_sub = ws.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = ws_sub.add_parser("create", help="create a workspace")
    p.add_argument("name")
    p.set_defaults(func=_create)
    p = ws_sub.add_parser("list", help="list workspaces")
    add_json_arg(p)
    p.set_defaults(func=_list)
    p = ws_sub.add_parser("rename", help="rename a workspace")
    p.add_argument("name")
    p.add_argument("new_name")
    p.set_defaults(func=_rename)
    p = ws_sub.add_parser("delete", help="delete a workspace and everything in it")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_delete)

    m = sub.add_parser("models", help="prepare or locate models (offline)")
    m_sub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = m_sub.add_parser("prepare", help="build the local copy of a model (Gemma conversion, tiny test models)")
    p.add_argument("name", nargs="?", default=models.DEFAULT_LLM)
    p.set_defaults(func=_prepare)
    p = m_sub.add_parser("path", help="print where a model's weights are")
    p.add_argument("name")
    p.add_argument("--embedder", action="store_true", help="resolve as an embedding model")
    p.set_defaults(func=_path)


def _create(args):
    ws = Workspace.create(args.name)
    print(f"created workspace '{ws.name}' at {ws.root}")


def _list(args):
    names = list_workspaces()
    if args.json:
        print_json(names)
    else:
        print("\n".join(names) if names else "no workspaces yet: `ragtune workspace create NAME`")


def _rename(args):
    ws = Workspace.open(args.name).rename(args.new_name)
    print(f"renamed to '{ws.name}'")


def _delete(args):
    ws = Workspace.open(args.name)
    if not args.yes:
        answer = input(f"Delete workspace '{ws.name}' and all its documents, indexes and adapters? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept")
            return 1
    ws.delete()
    print(f"deleted workspace '{args.name}'")


def _prepare(args):
    print(models.resolve_llm(args.name).path)


def _path(args):
    resolved = models.resolve_embedder(args.name) if args.embedder else models.resolve_llm(args.name)
    print(resolved.path)
