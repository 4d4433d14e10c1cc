"""The optional LLM judge: score parsing, and a real round trip to an OpenAI-compatible endpoint."""

import pytest

from evaluation.judge import JUDGE_PROMPT, JudgeConfig, judge_answer, parse_score
from evaluation.runner import run_eval
from ragtune.errors import ServerUnavailableError
from ragtune.net import free_port
from serving.engine import SamplingOptions


def test_parse_score():
    assert parse_score("SCORE: 7\nMostly right.") == 0.7
    assert parse_score("score=10 all facts match") == 1.0
    assert parse_score("Score: 0") == 0.0
    assert parse_score("SCORE: 12") is None  # out of range: not guessed
    assert parse_score("The answer is fine.") is None
    assert "{question}" in JUDGE_PROMPT and "{reference}" in JUDGE_PROMPT and "{answer}" in JUDGE_PROMPT


def test_dead_judge_endpoint_is_a_clear_error():
    config = JudgeConfig(f"http://127.0.0.1:{free_port()}/v1", "base", timeout_s=2, max_retries=0)
    with pytest.raises(ServerUnavailableError, match="cannot be reached"):
        judge_answer(config, "q", "r", "a")


def test_judge_round_trip_through_ragtune_openai_api(workspace, tiny_engine, serve_asgi):
    from serving.openai_api import build_app

    url = serve_asgi(build_app(workspace, tiny_engine))
    judge = JudgeConfig(f"{url}/v1", "base", max_tokens=8)
    run = run_eval(workspace, [{"question": "What is the K7 top speed?", "answer": "2.3 m/s"}], ["base"],
                   tiny_engine, judge=judge, options=SamplingOptions(max_tokens=4))
    metrics = run.results[0]["metrics"]
    # the tiny random model cannot grade: its reply is kept, and no score is invented
    assert isinstance(metrics["judge_reply"], str) and metrics["judge_score"] is None
    assert run.summary["judge"]["prompt"] == JUDGE_PROMPT
