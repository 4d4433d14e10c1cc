"""Report export with plots, the blind arena, and the `ragtune eval/report/arena` commands."""

import csv
import json

import pytest

from app.cli import main as cli
from evaluation.arena import leaderboard, list_battles, new_battle, record_vote
from evaluation.qa_sets import load_qa_file
from evaluation.report import export_report, summary_markdown
from evaluation.assistants import make_assistant
from evaluation.runner import run_eval
from ragtune.errors import BadInputError
from serving.engine import SamplingOptions

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def finished_run(workspace, tiny_engine, tiny_adapter, sample_qa):
    rows = load_qa_file(sample_qa)[0][:3]
    return run_eval(workspace, rows, "base,ft", tiny_engine, options=SamplingOptions(max_tokens=8))


def test_markdown_and_html_reports_render_with_plots(workspace, finished_run):
    md = export_report(workspace, finished_run.run_id, "md")
    text = md.read_text()
    assert "## Recommendation" in text and "| token_f1 |" in text and "Wilcoxon" in text
    for name in ("correctness", "latency"):
        assert f"![{name}]({name}.png)" in text
        assert (md.parent / f"{name}.png").read_bytes().startswith(PNG)
    html = export_report(workspace, finished_run.run_id, "html").read_text()
    assert html.count('src="data:image/png;base64,') >= 2 and "<table>" in html
    with open(md.parent / "answers.csv", newline="") as f:
        answers = list(csv.DictReader(f))
    assert len(answers) == 6 and {a["variant"] for a in answers} == {"base", "ft"}
    assert all(a["question"] and a["reference"] and "token_f1" in a for a in answers)
    with pytest.raises(BadInputError):
        export_report(workspace, finished_run.run_id, "pdf")


def test_summary_markdown_holds_each_metric_each_pair_and_the_recommendation(finished_run):
    s = finished_run.summary
    text = summary_markdown(s)
    f1 = s["variants"]["ft"]["metrics"]["token_f1"]
    assert f"| token_f1 | " in text and f"{f1['mean']:.3f} [{f1['ci_low']:.3f}, {f1['ci_high']:.3f}]" in text
    for p in s["paired"]:
        assert f"| {p['a']} | {p['b']} | {p['metric']} | {p['n']} |" in text
    assert text.endswith(s["recommendation"]["text"])
    undefined = dict(s["paired"][0], mean_diff=None, ci_low=None, ci_high=None, p_value=None, significant=False)
    assert "| - | [-, -] | - | no |" in summary_markdown(dict(s, paired=[undefined]))


def test_arena_hides_variants_until_the_vote(workspace, tiny_engine, tiny_adapter):
    assistant = make_assistant(workspace, tiny_engine)
    battle = new_battle(workspace, assistant, "What is the K7 top speed?", ["base", "ft"],
                        options=SamplingOptions(max_tokens=8))
    assert set(battle) == {"battle_id", "question", "left_text", "right_text"}
    assert leaderboard(workspace) == []  # no vote yet
    revealed = record_vote(workspace, battle["battle_id"], "left")
    assert {revealed["left_variant"], revealed["right_variant"]} == {"base", "ft"}
    with pytest.raises(BadInputError, match="already"):
        record_vote(workspace, battle["battle_id"], "right")
    with pytest.raises(BadInputError, match="Unknown vote"):
        record_vote(workspace, battle["battle_id"], "maybe")
    board = leaderboard(workspace)
    assert board[0]["variant"] == revealed["left_variant"] and board[0]["battles"] == 1
    assert len(list_battles(workspace, voted_only=True)) == 1
    with pytest.raises(BadInputError, match="two different"):
        new_battle(workspace, assistant, "q?", ["base", "base"])


def test_eval_command_json_then_report(workspace, tiny_engine, tiny_adapter, sample_qa, capsys):
    code = cli(["eval", "--workspace", str(workspace.root), "--qa", str(sample_qa), "--variants", "base,ft",
                "--model", "tiny-llama", "--limit", "3", "--max-tokens", "8", "--json", "--report", "html"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and set(out["variants"]) == {"base", "ft"}
    f1 = out["variants"]["base"]["metrics"]["token_f1"]
    assert f1["ci_low"] <= f1["mean"] <= f1["ci_high"]
    assert {"verdict", "text", "evidence"} <= set(out["recommendation"])
    assert any(p["metric"] == "token_f1" and {p["a"], p["b"]} == {"base", "ft"} for p in out["paired"])
    assert out["report"].endswith("report.html")

    assert cli(["report", "--workspace", str(workspace.root), out["run_id"], "--format", "md"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    assert cli(["eval", "--workspace", str(workspace.root), "--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "succeeded"


def test_eval_command_reports_bad_rows_and_bad_files(workspace, tiny_engine, sample_qa, capsys):
    code = cli(["eval", "--workspace", str(workspace.root), "--qa", str(sample_qa.parent / "bad_files" / "malformed.jsonl"),
                "--variants", "base", "--model", "tiny-llama", "--limit", "1", "--max-tokens", "4", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    assert "skipped line 3" in captured.err and "skipped line 5" in captured.err
    assert [r["line"] for r in json.loads(captured.out)["skipped_rows"]] == [3, 5]
    code = cli(["eval", "--workspace", str(workspace.root), "--qa", str(sample_qa.parent / "bad_files" / "empty.txt"),
                "--variants", "base", "--model", "tiny-llama"])
    assert code == 2 and "error:" in capsys.readouterr().err
