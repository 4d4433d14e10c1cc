"""The flags many commands share are defined once (app/commands/common.py, serving_cmds.add_engine_args), so
they read the same in every command's --help; `ragtune train --detach` and `ragtune eval --detach` used to
say it in three different ways, and `ragtune jobs resume --detach` not at all."""

import argparse
from collections import defaultdict

from app.cli import build_parser

SHARED = ("workspace", "json", "detach")
ENGINE = ("engine", "model", "url", "max_model_len", "dtype", "vllm_arg")


def _commands(parser: argparse.ArgumentParser, path: tuple = ()):
    """(command path, its parser) for every command and action below ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))
    yield path, parser


def _flags(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: (tuple(a.option_strings), a.help, repr(a.default), a.type, a.choices)
            for a in parser._actions}


def test_a_shared_flag_reads_the_same_in_every_command():
    spellings = defaultdict(set)
    users = defaultdict(list)
    for path, parser in _commands(build_parser()):
        for dest, flag in _flags(parser).items():
            if dest in SHARED:
                spellings[dest].add(flag)
                users[dest].append(" ".join(path))
    for dest in SHARED:
        assert len(spellings[dest]) == 1, (dest, spellings[dest])
    assert {"train", "eval", "ingest", "index", "synth", "jobs resume"} <= set(users["detach"])
    assert {"jobs list", "adapters list", "documents list", "arena leaderboard"} <= set(users["json"])


def test_the_arena_takes_the_engine_flags_of_ask():
    commands = dict(_commands(build_parser()))
    battle, ask = _flags(commands[("arena", "battle")]), _flags(commands[("ask",)])
    assert {dest: battle[dest] for dest in ENGINE} == {dest: ask[dest] for dest in ENGINE}
    assert battle["max_tokens"] == ask["max_tokens"]
