"""Bootstrap intervals, paired tests and Bradley-Terry against values known in closed form."""

import math

import numpy as np
import pytest

from evaluation.stats import bootstrap_ci, bradley_terry, bradley_terry_with_ci, paired_test, wilcoxon_p


def test_bootstrap_degenerate_cases():
    assert bootstrap_ci([]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert bootstrap_ci([0.4]) == {"mean": 0.4, "ci_low": 0.4, "ci_high": 0.4, "n": 1}
    assert bootstrap_ci([1, 1, 1, None]) == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3}


def test_bootstrap_interval_matches_normal_approximation_and_is_seeded():
    rng = np.random.default_rng(1)
    values = list(rng.binomial(1, 0.5, size=400).astype(float))
    ci = bootstrap_ci(values)
    mean = float(np.mean(values))
    half = 1.96 * math.sqrt(mean * (1 - mean) / len(values))  # ~0.049 for n=400
    assert ci["mean"] == pytest.approx(mean)
    assert ci["ci_low"] == pytest.approx(mean - half, abs=0.012)
    assert ci["ci_high"] == pytest.approx(mean + half, abs=0.012)
    assert bootstrap_ci(values) == ci  # same seed, same interval


def test_wilcoxon_exact_p_value():
    # five positive differences: the signed-rank statistic is extreme; exact two-sided p = 2 / 2**5
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(0.0625)
    assert wilcoxon_p([0, 0, 0]) == 1.0
    assert wilcoxon_p([]) is None


def test_paired_test_separates_and_pairs_on_questions():
    a = [0.9, 0.8, 0.95, 0.7, 0.85, 0.9, 0.8, 0.75, 0.9, 0.88, 0.92, 0.81]
    b = [x - 0.3 for x in a]
    res = paired_test(a, b, a="rag", b="base", metric="token_f1")
    assert res.n == 12 and res.mean_diff == pytest.approx(0.3)
    assert res.ci_low == pytest.approx(0.3) and res.significant  # constant difference: zero-width interval
    # pairs with a missing score are dropped
    res = paired_test([1.0, None, 0.0], [0.0, 1.0, None])
    assert res.n == 1 and res.mean_diff == 1.0
    # identical scores: no difference
    assert not paired_test(a, a).significant


def test_bradley_terry_two_players_closed_form():
    # A beats B 3 times out of 4: p_A / p_B = 3, so the rating gap is 400 * log10(3) = 190.85
    r = bradley_terry([("A", "B", "left")] * 3 + [("A", "B", "right")])
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (r["A"] + r["B"]) / 2 == pytest.approx(1000)


def test_bradley_terry_ties_split_and_sides_do_not_matter():
    # 2 wins + 2 ties for A over 4 games = 3 points of 4: same gap as 3-1
    r = bradley_terry([("A", "B", "left"), ("B", "A", "right"), ("A", "B", "tie"), ("B", "A", "both_bad")])
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)


def test_bradley_terry_balanced_cycle_is_a_draw_and_transitive_order_is_found():
    cycle = [("A", "B", "left"), ("B", "C", "left"), ("C", "A", "left")]
    r = bradley_terry(cycle)
    assert max(r.values()) - min(r.values()) == pytest.approx(0, abs=1e-6)
    # A beats B 2:1, B beats C 2:1, A beats C 4:1: a consistent strength order A > B > C
    votes = [("A", "B", "left")] * 2 + [("A", "B", "right")] + [("B", "C", "left")] * 2 + [("B", "C", "right")] \
        + [("A", "C", "left")] * 4 + [("A", "C", "right")]
    r = bradley_terry(votes)
    assert r["A"] > r["B"] > r["C"]
    # the maximum-likelihood score equations hold: expected wins == observed wins for each player
    p = {k: 10 ** ((v - 1000) / 400) for k, v in r.items()}
    expected_a = 3 * p["A"] / (p["A"] + p["B"]) + 5 * p["A"] / (p["A"] + p["C"])
    assert expected_a == pytest.approx(2 + 4, abs=1e-6)


def test_undefeated_variant_stays_finite_with_prior_and_intervals_cover_rating():
    votes = [("rag", "base", "left")] * 8 + [("rag", "ft", "left")] * 3 + [("ft", "base", "left")] * 5 \
        + [("ft", "base", "right")] * 2 + [("rag", "ft", "tie")] * 2
    board = bradley_terry_with_ci(votes, resamples=100)
    assert [row["variant"] for row in board] == ["rag", "ft", "base"]
    for row in board:
        assert math.isfinite(row["rating"]) and row["ci_low"] <= row["rating"] <= row["ci_high"]
    assert {row["variant"]: row["battles"] for row in board} == {"rag": 13, "ft": 12, "base": 15}
    assert board == bradley_terry_with_ci(votes, resamples=100)  # seeded
