import json
import subprocess
import sys

import pytest

from app.cli import build_parser, main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_every_command_has_help_and_workspace_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"workspace", "models"} <= set(sub.choices)
    for name, cmd in sub.choices.items():
        assert cmd.format_help()
        leaves = [cmd]
        for action in cmd._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                leaves = list(action.choices.values())
        for leaf in leaves:
            opts = {o for a in leaf._actions for o in a.option_strings}
            if name not in ("workspace", "models"):
                assert "--workspace" in opts, f"`ragtune {name}` lacks --workspace"


def test_workspace_commands(capsys):
    assert main(["workspace", "create", "acme"]) == 0
    assert main(["workspace", "create", "acme"]) == 2  # duplicate: a clear error, not a traceback
    assert "already exists" in capsys.readouterr().err
    assert main(["workspace", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["acme"]
    assert main(["workspace", "rename", "acme", "acme2"]) == 0
    assert main(["workspace", "delete", "acme2", "--yes"]) == 0
    capsys.readouterr()
    assert main(["workspace", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_errors_are_messages_not_tracebacks(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = run_cli("models", "path", "someone/missing-model")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Cannot load language model 'someone/missing-model'")
    assert "Traceback" not in proc.stderr


def test_help_runs_as_console_script():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "workspace" in proc.stdout
