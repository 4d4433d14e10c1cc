"""Runs on the tiny model: resumable after an interruption, cached across runs, stored in the workspace."""

import json
from pathlib import Path

import pytest

from evaluation import metrics as M
from evaluation.qa_sets import load_qa_file
from evaluation.report import export_report
from evaluation.runner import list_runs, load_run, run_eval
from evaluation.service import EvalConfig, _lora_rank_needed
from evaluation.store import run_results
from ragtune.errors import BadInputError
from serving.engine import SamplingOptions

OPTS = SamplingOptions(max_tokens=8)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def rows(sample_qa):
    return load_qa_file(sample_qa)[0][:4]


def test_interrupted_run_resumes_and_reruns_reuse_cache(workspace, tiny_engine, tiny_adapter, rows):
    seen = []

    def stop_after_three(done, total, label):
        seen.append((done, total))
        if done == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_eval(workspace, rows, "base,ft", tiny_engine, progress=stop_after_three, run_id="r1", options=OPTS)
    assert seen[0] == (0, 8) and seen[-1] == (3, 8)
    [info] = list_runs(workspace)
    assert (info["run_id"], info["status"], info["answered"], info["expected"]) == ("r1", "interrupted", 3, 8)
    partial = {(r["idx"], r["variant"]): r["answer"]["text"] for r in run_results(workspace, "r1")}

    run = run_eval(workspace, None, None, tiny_engine, run_id="r1")  # resume: rows and variants come from the store
    assert (run.computed, run.cached, run.status) == (5, 0, "succeeded")
    assert len(run.results) == 8
    assert {(r["idx"], r["variant"]): r["answer"]["text"] for r in run.results if (r["idx"], r["variant"]) in partial} == partial
    assert load_run(workspace, "r1").summary["variants"]["ft"]["cost"]["training_time_s"] == 12.5

    again = run_eval(workspace, rows, ["base", "ft"], tiny_engine, options=OPTS)
    assert (again.computed, again.cached) == (0, 8)
    assert again.summary["variants"]["base"]["metrics"]["token_f1"] == run.summary["variants"]["base"]["metrics"]["token_f1"]

    longer = run_eval(workspace, rows[:2], ["base"], tiny_engine, options=SamplingOptions(max_tokens=9))
    assert longer.computed == 2  # a generation setting changed: new answers


def test_retrained_adapter_invalidates_only_its_answers(workspace, tiny_engine, rows, adapter_factory):
    adapter_factory(workspace, seed=0)
    first = run_eval(workspace, rows[:2], "base,ft", tiny_engine, options=OPTS)
    assert first.computed == 4
    adapter_factory(workspace, seed=1)  # same name, new weights and timestamp
    second = run_eval(workspace, rows[:2], "base,ft", tiny_engine, options=OPTS)
    assert (second.computed, second.cached) == (2, 2)
    assert {r["variant"] for r in second.results} == {"base", "ft"}

    def stop_at_once(done, total, label):
        if done == 1:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_eval(workspace, rows[2:4], "base,ft", tiny_engine, options=OPTS, run_id="half", progress=stop_at_once)
    adapter_factory(workspace, seed=2)
    with pytest.raises(BadInputError, match="retrained"):  # its halves would not compare
        run_eval(workspace, None, None, tiny_engine, run_id="half")


def test_stored_answers_carry_tokens_and_latency(workspace, tiny_engine, rows):
    run = run_eval(workspace, rows[:2], ["base"], tiny_engine, options=OPTS)
    for r in run.results:
        a, m = r["answer"], r["metrics"]
        assert a["model"] == "tiny-llama" and a["completion_tokens"] > 0 and a["latency_s"] > 0
        assert m["prompt_tokens"] == a["prompt_tokens"] and m["e2e_tokens_per_s"] > 0 and m["decode_tokens_per_s"] > 0
        assert "tokens_per_s" not in m
        assert 0 <= m["token_f1"] <= 1 and 0 <= m["semantic_similarity"] <= 1
    s = run.summary
    assert s["n"] == 2 and set(s["variants"]) == {"base"}
    cost = s["variants"]["base"]["cost"]
    assert cost["tokens_served"] == sum(r["answer"]["prompt_tokens"] + r["answer"]["completion_tokens"]
                                        for r in run.results)
    assert cost["generation_s"] == pytest.approx(sum(r["answer"]["latency_s"] for r in run.results), abs=1e-3)
    assert {"mean", "ci_low", "ci_high", "n"} <= set(s["variants"]["base"]["metrics"]["token_f1"])


def test_bad_requests_fail_clearly(workspace, tiny_engine, rows):
    with pytest.raises(BadInputError, match="adapter"):
        run_eval(workspace, rows, ["ft"], tiny_engine)
    with pytest.raises(BadInputError, match="Unknown variant"):
        run_eval(workspace, rows, ["finetune"], tiny_engine)
    with pytest.raises(BadInputError, match="No evaluation run"):
        load_run(workspace, "nope")
    with pytest.raises(BadInputError, match="No evaluation run"):
        run_eval(workspace, None, None, tiny_engine, run_id="nope")


def test_concurrent_run_answers_variant_by_variant(workspace, tiny_engine, tiny_adapter, rows):
    """With several questions in flight the runner sends one variant's questions together (vLLM then
    batches requests that share an adapter); one at a time it keeps question order."""
    order = {}
    for concurrency, max_tokens in ((1, 8), (3, 7)):  # another length: nothing comes from the cache
        seen = []
        run = run_eval(workspace, rows, "base,ft", tiny_engine, options=SamplingOptions(max_tokens=max_tokens),
                       concurrency=concurrency, progress=lambda done, total, label: seen.append(label.split(":")[0]))
        assert (run.computed, run.status) == (2 * len(rows), "succeeded")
        assert {(r["idx"], r["variant"]) for r in run.results} == {(i, v) for i in range(len(rows))
                                                                    for v in ("base", "ft")}
        order[concurrency] = seen[1:]  # the first call says "starting"
    assert order[1] == ["base", "ft"] * len(rows)
    assert order[3] == ["base"] * len(rows) + ["ft"] * len(rows)


def test_vllm_server_sized_for_the_adapters_evaluated(workspace, tiny_adapter, adapter_factory):
    assert _lora_rank_needed(workspace, EvalConfig(variants="base,rag", engine="vllm")) == 16
    assert _lora_rank_needed(workspace, EvalConfig(variants="base,ft", engine="vllm")) == 16  # rank 4 -> 16
    wide = adapter_factory(workspace, name="wide")
    config_file = Path(wide.path) / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "r": 40}))
    assert _lora_rank_needed(workspace, EvalConfig(variants="ft:tiny-lora,ft+rag:wide", engine="vllm")) == 64
    assert _lora_rank_needed(workspace, EvalConfig(variants="ft", adapter="tiny-lora", engine="vllm")) == 16


class _SameWeightsOtherEngine:
    """The tiny model's engine under another engine kind (as a vLLM server serving the same weights would be)."""

    kind = "vllm"

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_answers_of_one_engine_are_never_reused_for_another(workspace, tiny_engine, rows):
    first = run_eval(workspace, rows[:2], ["base"], tiny_engine, options=OPTS)
    assert (first.computed, first.config["engine"]) == (2, "embedded")
    other = run_eval(workspace, rows[:2], ["base"], _SameWeightsOtherEngine(tiny_engine), options=OPTS)
    assert (other.computed, other.cached, other.config["engine"]) == (2, 0, "vllm")
    renamed = run_eval(workspace, rows[:2], ["base"], tiny_engine, options=OPTS, model="another-model")
    assert (renamed.computed, renamed.cached) == (2, 0)  # same engine kind, another model
    again = run_eval(workspace, rows[:2], ["base"], _SameWeightsOtherEngine(tiny_engine), options=OPTS)
    assert (again.computed, again.cached) == (0, 2)  # the same engine and model: its own answers come back


class _RecordingEngine:
    """The tiny model's engine, keeping the sampling options of every request."""

    def __init__(self, inner):
        self._inner, self.options = inner, []

    def stream(self, messages, options=None, **kwargs):
        self.options.append(options)
        return self._inner.stream(messages, options, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_repetition_controls_are_settings_of_the_run_and_survive_a_resume(workspace, tiny_engine, rows):
    plain = run_eval(workspace, rows[:2], ["base"], tiny_engine, options=OPTS)
    # Off, they are not in the settings, so the answers cached before these options existed keep their keys.
    assert not {"repetition_penalty", "no_repeat_ngram_size"} & set(plain.config["settings"])
    controlled = SamplingOptions(max_tokens=8, repetition_penalty=1.3, no_repeat_ngram_size=3)
    engine = _RecordingEngine(tiny_engine)

    def stop_after_one(done, total, label):
        if done == 1:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_eval(workspace, rows[:2], ["base"], engine, options=controlled, run_id="rep", progress=stop_after_one)
    resumed = run_eval(workspace, None, None, engine, run_id="rep")
    assert (resumed.computed, resumed.config["settings"]["repetition_penalty"],
            resumed.config["settings"]["no_repeat_ngram_size"]) == (1, 1.3, 3)
    assert len(engine.options) == 2  # a new answer for each question: the plain run's were not reused
    assert all((o.repetition_penalty, o.no_repeat_ngram_size) == (1.3, 3) for o in engine.options)


def test_a_run_stored_before_the_two_token_rates_loads_under_their_names(workspace, tiny_engine, rows):
    """Runs stored when "tokens_per_s" was the end-to-end rate read it as e2e_tokens_per_s; their decode rate
    comes from the stored times; the stored summary and the report use the new names."""
    run = run_eval(workspace, rows[:2], ["base"], tiny_engine, options=OPTS, run_id="old-names")
    with workspace.db() as conn:  # as an older ragtune wrote it
        for r in run.results:
            old = {k: v for k, v in r["metrics"].items() if k not in ("e2e_tokens_per_s", "decode_tokens_per_s")}
            old["tokens_per_s"] = r["metrics"]["e2e_tokens_per_s"]
            conn.execute("UPDATE eval_results SET metrics=? WHERE run_id=? AND idx=? AND variant=?",
                         (json.dumps(old), run.run_id, r["idx"], r["variant"]))
        summary = json.loads(json.dumps(run.summary))
        for stats in summary["variants"].values():
            stats["metrics"]["tokens_per_s"] = stats["metrics"].pop("e2e_tokens_per_s")
            del stats["metrics"]["decode_tokens_per_s"]
        summary["metric_docs"]["tokens_per_s"] = "Answer tokens generated per second."
        del summary["metric_docs"]["e2e_tokens_per_s"], summary["metric_docs"]["decode_tokens_per_s"]
        conn.execute("UPDATE eval_runs SET summary=? WHERE run_id=?", (json.dumps(summary), run.run_id))

    loaded = load_run(workspace, run.run_id)
    for before, after in zip(run.results, loaded.results):
        assert "tokens_per_s" not in after["metrics"]
        assert after["metrics"]["e2e_tokens_per_s"] == before["metrics"]["e2e_tokens_per_s"]
        assert after["metrics"]["decode_tokens_per_s"] == pytest.approx(before["metrics"]["decode_tokens_per_s"])
    stored = loaded.summary["variants"]["base"]["metrics"]
    assert stored["e2e_tokens_per_s"] == run.summary["variants"]["base"]["metrics"]["e2e_tokens_per_s"]
    assert "tokens_per_s" not in stored and "tokens_per_s" not in loaded.summary["metric_docs"]
    assert loaded.summary["metric_docs"]["e2e_tokens_per_s"] == M.METRIC_DOCS["e2e_tokens_per_s"]
    report = export_report(workspace, run.run_id, "md").read_text()
    assert "| e2e_tokens_per_s |" in report and "| decode_tokens_per_s |" in report
