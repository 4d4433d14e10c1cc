"""`ragtune deploy`, `ragtune keys ...`, `ragtune deployments ...`, `ragtune next-round`."""

from __future__ import annotations

import sys
import time

from app.next_round import NEXT_ROUND, NextRound, NextRoundConfig, finish_next_round, list_rounds
from app.wiring.servers import deploy_server
from evaluation.service import suggested_variant
from ragtune.config_args import add_dataclass_arguments, dataclass_from_args
from ragtune.errors import BadInputError
from ragtune.paths import workspaces_root
from serving.deploy import deployments, keys
from serving.deploy.server import DeployLimits
from serving.factory import close_engine

from .common import (add_actions, add_command, add_detach_arg, add_json_arg, add_workspace_arg, local_time,
                     open_workspace, print_json, print_list, run_operation)
from .serving_cmds import add_engine_args, engine_from_args


def register(sub) -> None:
    _register_deploy(sub)
    _register_keys(sub)
    _register_deployments(sub)
    _register_next_round(sub)


def _register_deploy(sub) -> None:
    p = sub.add_parser("deploy", help="publish a variant (optional) and serve the end-user assistant",
                       description="Serve the published assistant of a workspace: a chat page for end users at "
                       "/chat/<workspace> and an OpenAI-compatible API at /v1 (API keys required: "
                       "`ragtune keys create`). With --variant, publish that variant first as a new version.")
    add_workspace_arg(p)
    p.add_argument("--variant", help="publish this variant first: base | rag | ft | ft+rag, optionally ':ADAPTER'")
    p.add_argument("--adapter", help="adapter for ft / ft+rag (default: the newest)")
    p.add_argument("--note", default="", help="note stored with the published version")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8100, help="port (default: %(default)s)")
    p.add_argument("--all-workspaces", action="store_true",
                   help="serve every workspace's published assistant, not only --workspace")
    p.add_argument("--max-tokens", type=int, default=512, help="longest answer a request may get (default: %(default)s)")
    add_engine_args(p)
    p.set_defaults(func=_deploy)


def _register_keys(sub) -> None:
    actions = add_actions(sub, "keys", help="create, list or revoke API keys of the deployed assistant")
    p = add_command(actions, "create", _keys_create, help="create a key (printed once; only a hash is stored)",
                    json=True)
    p.add_argument("name", help="what the key is for, e.g. the app that uses it")
    p.add_argument("--rate", type=int, default=60, help="requests per minute allowed (default: %(default)s)")
    add_command(actions, "list", _keys_list, help="list keys (never their secret)", json=True)
    p = add_command(actions, "revoke", _keys_revoke, help="revoke a key by id, name or the key itself")
    p.add_argument("key")


def _register_deployments(sub) -> None:
    actions = add_actions(sub, "deployments", help="published versions: list, publish, roll back")
    add_command(actions, "list", _dep_list, help="every published version, newest first", json=True)
    p = add_command(actions, "publish", _dep_publish, help="make a variant the live assistant (a new version)")
    p.add_argument("variant", help="base | rag | ft | ft+rag, optionally ':ADAPTER'")
    p.add_argument("--adapter")
    p.add_argument("--note", default="")
    p = add_command(actions, "rollback", _dep_rollback,
                    help="make an earlier version live again (default: the previous one)")
    p.add_argument("--to", type=int, dest="to_version", help="version number to restore")


def _register_next_round(sub) -> None:
    p = sub.add_parser("next-round", help="turn end-user feedback into training rows, fine-tune again, publish",
                       description="Approved answers and corrections from the chat page become a new dataset "
                       "version (deduplicated, test questions held out); a fine-tune starts on it. With --wait it "
                       "waits for the job; with --publish the new adapter goes live (roll back with "
                       "`ragtune deployments rollback`).")
    add_workspace_arg(p)
    add_dataclass_arguments(p, NextRoundConfig)
    p.add_argument("--finish", nargs="?", const="latest", metavar="ROUND",
                   help="instead of starting a round: wait for ROUND (default: the newest) and publish it")
    p.add_argument("--list", action="store_true", help="list the rounds so far")
    add_detach_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_next_round)


# ------------------------------------------------------------------ deploy

def _deploy(args) -> int:
    ws = open_workspace(args)
    if args.variant:
        dep = deployments.publish(ws, args.variant, args.adapter, note=args.note)
        print(f"published version {dep.version}: {dep.model}", file=sys.stderr)
    elif deployments.current(ws) is None:
        raise BadInputError(f"Nothing is published in workspace '{ws.name}': pass --variant (the newest evaluation "
                            f"suggests `ragtune deploy -w {ws.name} --variant {suggested_variant(ws)}`).")
    engine = engine_from_args(args)
    server = deploy_server(workspaces_root() if args.all_workspaces else ws, engine, host=args.host, port=args.port,
                           limits=DeployLimits(max_tokens=args.max_tokens), log_level="info")
    server.start()
    print(f"chat page:  {server.url}/chat/{ws.name}\nOpenAI API: {server.url}/v1  (Authorization: Bearer <key>)\n"
          f"metrics:    {server.url}/metrics\nCtrl+C to stop.", file=sys.stderr)
    try:
        while server.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        close_engine(engine)
    return 0


# ------------------------------------------------------------------ keys

def _keys_create(args) -> int:
    ws = open_workspace(args)
    key = keys.create_key(ws, args.name, args.rate)
    if args.json:
        print_json({"key": key, "name": args.name, "rate_limit_per_min": args.rate})
    else:
        print(key)
        print(f"API key '{args.name}' ({args.rate}/min) for workspace '{ws.name}'. It is shown only now: "
              "store it safely.", file=sys.stderr)
    return 0


def _keys_list(args) -> int:
    return print_list(args, keys.list_keys(open_workspace(args)), _key_line,
                      empty="no keys yet: `ragtune keys create NAME`")


def _key_line(k) -> str:
    return (f"{k.key_id}  {k.name:<20} {k.rate_limit_per_min:>6}/min  "
            f"{'revoked' if k.revoked else 'active':<8} last used {local_time(k.last_used_at)}")


def _keys_revoke(args) -> int:
    info = keys.revoke_key(open_workspace(args), args.key)
    print(f"revoked key {info.key_id} ({info.name})")
    return 0


# ------------------------------------------------------------------ deployments

def _dep_list(args) -> int:
    return print_list(args, deployments.history(open_workspace(args)), _deployment_line,
                      empty="nothing published yet: `ragtune deployments publish rag` or `ragtune deploy --variant rag`")


def _deployment_line(d) -> str:
    return f"{'*' if d.current else ' '} v{d.version:<4} {d.model:<40} {local_time(d.created_at)}  {d.note}"


def _dep_publish(args) -> int:
    d = deployments.publish(open_workspace(args), args.variant, args.adapter, note=args.note)
    print(f"version {d.version} is live: {d.model}")
    return 0


def _dep_rollback(args) -> int:
    d = deployments.rollback(open_workspace(args), args.to_version)
    print(f"version {d.version} is live again: {d.model}")
    return 0


# ------------------------------------------------------------------ next round

def _next_round(args) -> int:
    ws = open_workspace(args)
    say = (lambda msg: print(msg, file=sys.stderr))
    if args.list:
        rounds = list_rounds(ws)
        if args.json:
            print_json([r.to_dict() for r in rounds])
        for r in [] if args.json else rounds:
            print(f"{r.round_id}  {r.status:<10} dataset {r.dataset:<5} adapter {r.adapter}"
                  + (f"  live as v{r.deployment_version}" if r.deployment_version else ""))
        return 0
    if args.finish:
        round_id = args.finish
        if round_id == "latest":
            rounds = list_rounds(ws)
            if not rounds:
                raise BadInputError("No training round yet: run `ragtune next-round` first.")
            round_id = rounds[0].round_id
        record = finish_next_round(ws, round_id, publish=True, progress=say)
    else:
        job = run_operation(ws, NEXT_ROUND, dataclass_from_args(NextRoundConfig, args), args, desc="next round",
                            unit="step")
        if job.status != "succeeded":
            return 0 if args.detach else 1
        record = NextRound(**job.result)
    if args.json:
        print_json(record.to_dict())
    else:
        print(f"{record.round_id}: dataset {record.dataset} ({record.stats.get('new_rows')} new rows), "
              f"adapter {record.adapter}, status {record.status}"
              + (f", live as version {record.deployment_version}" if record.deployment_version else "")
              + ("" if record.status != "training" else
                 f"\ntraining runs in the background (job {record.job_id}); "
                 "`ragtune next-round --finish` waits for it and publishes the adapter"))
    return 0
