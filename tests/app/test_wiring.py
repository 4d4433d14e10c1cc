"""The composition root: one engine spec for every engine flag, one deploy app, chat outside evaluation/."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import app.commands.deploy_cmds as deploy_cmds
import app.ui.deploy as deploy_tab
from app.cli import build_parser
from app.wiring.assistants import EngineSpec
from ragtune.errors import BadInputError

REPO = Path(__file__).resolve().parents[2]


def _spec(*flags: str) -> EngineSpec:
    return EngineSpec.from_args(build_parser().parse_args(["ask", "q", *flags]))


def test_the_engine_flags_become_the_options_of_the_engine_they_name():
    assert _spec().engine_options() == {}
    assert _spec("--dtype", "auto", "--max-model-len", "1024").engine_options() == \
        {"dtype": "float32", "max_model_len": 1024}  # "auto" on the embedded engine: float32
    started = _spec("--engine", "vllm", "--tensor-parallel-size", "2", "--max-loras", "3",
                    "--vllm-arg=--enable-prefix-caching", "--vllm-port", "9000")
    assert started.starts_a_server and started.engine_options() == {
        "extra_args": ["--enable-prefix-caching", "--tensor-parallel-size", "2"], "max_loras": 3, "port": 9000}
    running = _spec("--engine", "vllm", "--url", "http://127.0.0.1:9000", "--max-model-len", "512")
    assert not running.starts_a_server and running.engine_options() == {}  # its settings are its own
    with pytest.raises(BadInputError, match="--engine vllm"):
        _spec("--url", "http://127.0.0.1:9000").engine_options()


def test_ragtune_deploy_the_deploy_tab_and_the_load_test_serve_the_one_deploy_app():
    for source in (inspect.getsource(deploy_cmds), inspect.getsource(deploy_tab),
                   (REPO / "bench" / "deploy_load.py").read_text()):
        assert "deploy_server(" in source and "build_deploy_app" not in source


@pytest.mark.parametrize("module", ["app/ui/chat.py", "app/ui/common.py", "app/commands/serving_cmds.py",
                                    "app/wiring/assistants.py", "app/wiring/servers.py"])
def test_a_chat_or_ask_question_does_not_pass_through_evaluation(module):
    tree = ast.parse((REPO / module).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.split(".")[0] == "evaluation"}
