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
from ragtune.workspace import Workspace

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


def test_a_chat_question_reaches_the_engine_in_at_most_8_hops_and_never_through_evaluation(tiny_llm, tmp_path):
    """The hop list of docs/architecture.md, measured: the call stack (our frames) at the engine, the retriever,
    the prompt builder and the citations when the chat tab's Send handler answers a rag question."""
    import sys
    from functools import partial

    from app.ui.chat import chat_turn
    from app.ui.common import AppContext, guarded
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths

    workspace = Workspace.create("hops")  # in this test's RAGTUNE_HOME, where the chat tab opens it by name
    (tmp_path / "k7.md").write_text("# K7\n\nThe K7 robot carries a payload of 1,450 kg.\n")
    ingest_paths(workspace, [tmp_path / "k7.md"])
    build_index(workspace, progress=False)
    ours = tuple(str(REPO / package) + "/" for package in ("app", "serving", "retrieval", "evaluation", "ragtune"))
    targets = {("embedded.py", "stream"): "engine", ("search.py", "retrieve"): "retriever",
               ("prompt.py", "build_rag_messages"): "prompt", ("citations.py", "citation_suffix"): "citations"}
    stacks: dict[str, list[str]] = {}

    def ours_below(frame) -> list[str]:
        names = []
        while frame is not None:
            if frame.f_code.co_filename.startswith(ours):
                names.append(f"{Path(frame.f_code.co_filename).relative_to(REPO)}::{frame.f_code.co_qualname}")
            frame = frame.f_back
        return names[::-1]

    def record(frame, event, _arg):
        target = targets.get((Path(frame.f_code.co_filename).name, frame.f_code.co_name))
        if event == "call" and target and target not in stacks and frame.f_code.co_filename.startswith(ours):
            stacks[target] = ours_below(frame)

    send = guarded(partial(chat_turn, AppContext(model="tiny-llama")))  # what the Send button calls
    sys.setprofile(record)
    try:
        *_, last = send(workspace.name, "What payload does the K7 carry?", "rag", "", 8, 0.0, [], [])
    finally:
        sys.setprofile(None)
    assert "k7.md" in last[2]  # the sources panel cites the document
    assert stacks["engine"] == ["app/ui/common.py::guarded.<locals>.gen_wrapper", "app/ui/chat.py::chat_turn",
                                "app/ui/chat.py::_stream_answer", "serving/variants.py::Assistant.stream",
                                "serving/variants.py::Assistant._generate",
                                "serving/embedded.py::EmbeddedEngine.stream"]
    assert set(stacks) == set(targets.values()) and all(len(stack) <= 8 for stack in stacks.values()), stacks
    assert not [name for stack in stacks.values() for name in stack if name.startswith("evaluation/")]
