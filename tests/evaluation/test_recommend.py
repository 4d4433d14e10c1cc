"""The verdict follows the evidence: significant gains, ties broken toward the simpler option."""

import numpy as np

from evaluation.recommend import recommend
from evaluation.runner import EvalRun, summarize


def make_run(means: dict[str, float], n: int = 40, spread: float = 0.15, seed: int = 0) -> EvalRun:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, spread, n)  # shared per question, as real questions are
    variants = [{"label": v, "kind": v, "adapter": "a" if v.startswith("ft") else None,
                 "training": {"training_time_s": 90.0} if v.startswith("ft") else None} for v in means]
    results = []
    for v, mu in means.items():
        noise = rng.normal(0, 0.05, n)
        for i in range(n):
            results.append({"idx": i, "variant": v, "answer": {}, "metrics": {
                "token_f1": float(np.clip(mu + difficulty[i] + noise[i], 0, 1)), "latency_s": 1.0 + (v.endswith("rag")),
                "prompt_tokens": 500 if v.endswith("rag") else 40, "completion_tokens": 30}})
    return EvalRun("run", {"variants": variants}, [{"question": f"q{i}", "answer": "a"} for i in range(n)], results)


def test_rag_clearly_better_than_base():
    s = summarize(make_run({"base": 0.1, "rag": 0.6}))
    rec = s["recommendation"]
    assert rec["verdict"] == "rag" and rec["primary_metric"] == "token_f1"
    assert "significant" in rec["text"] and "Freshness" in rec["text"]
    assert rec["comparisons"][0]["ci_low"] > 0


def test_nothing_beats_base_means_neither():
    rec = summarize(make_run({"base": 0.3, "rag": 0.3, "ft": 0.3}))["recommendation"]
    assert rec["verdict"] == "neither"


def test_tie_between_rag_and_ft_goes_to_rag_and_clear_ft_win_goes_to_ft():
    rec = summarize(make_run({"base": 0.1, "rag": 0.5, "ft": 0.5}))["recommendation"]
    assert rec["verdict"] == "rag"
    rec = summarize(make_run({"base": 0.1, "rag": 0.3, "ft": 0.7}))["recommendation"]
    assert rec["verdict"] == "fine-tune"
    assert "retrained" in rec["text"]


def test_both_when_combination_beats_each_alone():
    rec = summarize(make_run({"base": 0.1, "rag": 0.4, "ft": 0.4, "ft+rag": 0.8}))["recommendation"]
    assert rec["verdict"] == "both"
    assert rec["evidence"][0]["variant"] == "ft+rag"


def test_recommend_handles_empty_summary():
    assert recommend({"variants": {}, "paired": []})["verdict"] == "neither"


def test_simpler_option_must_still_beat_base():
    # ft+rag clearly beats base; rag is tied with ft+rag on noise but also tied with base:
    # recommending rag would rest on nothing, so the verdict is "both".
    run = make_run({"base": 0.3, "rag": 0.3, "ft+rag": 0.6}, n=12, spread=0.05)
    for r in run.results:  # make rag very noisy, so it is significantly different from neither
        if r["variant"] == "rag":
            r["metrics"]["token_f1"] = [0.0, 0.9][r["idx"] % 2]
    s = summarize(run)
    rec = s["recommendation"]
    paired = {(p["a"], p["b"]): p for p in s["paired"] if p["metric"] == "token_f1"}
    assert not paired[("rag", "base")]["significant"] and not paired[("ft+rag", "rag")]["significant"]
    assert rec["verdict"] == "both" and "Not chosen although simpler: RAG" in rec["text"]


def _with(run, variant: str, **metrics):
    for r in run.results:
        if r["variant"] == variant:
            r["metrics"].update(metrics)
    return run


def test_rag_worse_than_base_says_so_and_blames_retrieval_when_it_missed():
    run = _with(make_run({"base": 0.5, "rag": 0.2}), "rag", hit_at_k=0.0, context_recall=0.1, groundedness=0.6)
    rec = summarize(run)["recommendation"]
    assert rec["verdict"] == "neither"
    assert "significantly WORSE than the base model" in rec["text"]
    assert [x["cause"] for x in rec["losses"]] == ["retrieval"]
    assert "retrieval missed the gold documents (hit@k 0.00)" in rec["text"]


def test_rag_worse_than_base_with_good_retrieval_blames_the_answers():
    run = _with(make_run({"base": 0.5, "rag": 0.2}), "rag", hit_at_k=1.0, groundedness=0.1, citation_rate=0.0)
    rec = summarize(run)["recommendation"]
    assert [x["cause"] for x in rec["losses"]] == ["generation"]
    assert "retrieval found the gold documents (hit@k 1.00) but the answers did not use the passages" in rec["text"]
    assert "groundedness 0.10" in rec["text"]


def test_no_loss_line_when_rag_is_not_worse():
    rec = summarize(make_run({"base": 0.3, "rag": 0.6}))["recommendation"]
    assert rec["losses"] == [] and "WORSE" not in rec["text"]


def test_answers_that_restate_the_question_are_named_with_their_rate_and_the_step_that_follows():
    """The analysts' corpus case: retrieval found the documents (hit@k 0.83) and RAG tied with base while
    half its answers restated the question. The verdict names the echo with its rate and the prompt size,
    and sends the user to fewer passages or a larger model, not to retrieval or training."""
    run = make_run({"base": 0.22, "rag": 0.22}, n=60)
    for r in run.results:
        if r["variant"] == "rag":
            r["metrics"].update(hit_at_k=float(r["idx"] % 6 != 0), groundedness=0.7,
                                echo_rate=float(r["idx"] % 60 < 28), loop_rate=0.0, prompt_tokens=1200)
        else:
            r["metrics"].update(echo_rate=float(r["idx"] % 60 < 16), loop_rate=0.0)
    summary = summarize(run)
    assert summary["variants"]["rag"]["metrics"]["echo_rate"]["mean"] == 28 / 60  # reported per variant
    rec = summary["recommendation"]
    assert rec["verdict"] == "neither"
    assert "47% of RAG's answers restate the question without answering it (echo rate 0.47) with prompts of " \
           "about 1,200 tokens" in rec["text"]
    assert "fewer passages per answer" in rec["text"] and "larger model" in rec["text"]
    assert "eval-retrieval" not in rec["text"] and "train longer" not in rec["text"]
    assert "27% of the base model's answers restate the question" in rec["text"]
    assert {(f["variant"], f["cause"]) for f in rec["findings"]} >= {("rag", "echo"), ("base", "echo")}


def _small_fine_tune(run, ft_label="ft"):
    for v in run.config["variants"]:
        if v["label"] == ft_label:
            v["training"] = {"training_time_s": 1100.0, "facts_trained": 19, "facts_total": 1577,
                             "rows_trained": 41, "rows_left_out": 4153, "tokens_per_epoch": 9_000,
                             "tokens_per_epoch_all": 905_000, "epochs": 2.0, "tokens_per_s": 85.6}
    return run


def test_a_fine_tune_that_saw_a_small_share_of_the_facts_is_stated_with_the_cost_of_covering_them():
    rec = summarize(_small_fine_tune(make_run({"base": 0.3, "rag": 0.6, "ft": 0.3})))["recommendation"]
    assert rec["verdict"] == "rag"
    assert "The fine-tune was trained on 19 of the corpus's 1,577 facts (1.2%): it cannot know the other 1,558." \
           in rec["text"]
    # 905,000 tokens x 2 epochs / 85.6 tokens/s = 21,145 s
    assert "Covering them all means 4,194 rows, 905,000 tokens an epoch: about 5.9 h of training on this " \
           "machine at its measured 86 tokens/s (2 epochs)" in rec["text"]
    assert "a fine-tune on all the facts" in rec["text"]  # the next step, as the fine-tune did not lose


def test_a_fine_tune_that_lost_ground_is_never_told_to_train_longer():
    rec = summarize(_small_fine_tune(make_run({"base": 0.5, "rag": 0.6, "ft": 0.2})))["recommendation"]
    assert [x["cause"] for x in rec["losses"]] == ["training"]
    assert "The fine-tune itself lost ground: it was trained on 19 of the corpus's 1,577 facts (1.2%)" in rec["text"]
    assert "Covering them all means 4,194 rows" in rec["text"]  # the share and the cost are still stated
    next_steps = [line for line in rec["text"].splitlines() if line.startswith("Next steps")]
    assert next_steps and "fine-tune on all the facts" not in next_steps[0]
    assert "train longer" not in rec["text"].lower()
