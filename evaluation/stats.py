"""Statistics behind every number shown: bootstrap intervals, paired tests, Bradley-Terry ratings.

All resampling is seeded, so the same answers always give the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


def _scipy_stats():
    """scipy.stats, imported on first use: it takes 0.6 s here, and this module is imported by every job
    process (the job registry holds the evaluation operation), while only a finished evaluation needs it."""
    from scipy import stats

    return stats


def _clean(values) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    return arr


def bootstrap_ci(values, *, confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED) -> dict:
    """Mean with a percentile-bootstrap interval: {"mean", "ci_low", "ci_high", "n"}.

    ``None`` values are dropped. One value gives a zero-width interval; none gives all ``None``.
    """
    arr = _clean(values)
    n = len(arr)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(arr.mean())
    if n == 1 or np.all(arr == arr[0]):
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": n}
    res = _scipy_stats().bootstrap((arr,), np.mean, confidence_level=confidence, n_resamples=resamples,
                        method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    return {"mean": mean, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "n": n}


@dataclass
class PairedResult:
    a: str
    b: str
    metric: str
    n: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None  # mean of (a - b) over questions both answered
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # Wilcoxon signed-rank, two-sided
    test: str = "wilcoxon signed-rank + paired bootstrap"

    @property
    def significant(self) -> bool:
        """The 95% interval of the difference excludes zero."""
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["significant"] = self.significant
        return d


def wilcoxon_p(diffs) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when all are zero."""
    d = _clean(diffs)
    if len(d) == 0:
        return None
    if np.all(d == 0):
        return 1.0
    return float(_scipy_stats().wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_test(a_scores, b_scores, *, a: str = "a", b: str = "b", metric: str = "",
                resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> PairedResult:
    """Compare two variants on the same questions (pairs where either score is None are dropped).

    The interval is a bootstrap over questions of the mean difference, so question difficulty
    cancels out; the p-value is the Wilcoxon signed-rank test on the same differences.
    """
    pairs = [(x, y) for x, y in zip(a_scores, b_scores) if x is not None and y is not None]
    if not pairs:
        return PairedResult(a, b, metric, 0, None, None, None, None, None, None)
    xa = np.array([p[0] for p in pairs], dtype=float)
    xb = np.array([p[1] for p in pairs], dtype=float)
    ci = bootstrap_ci(xa - xb, resamples=resamples, seed=seed)
    return PairedResult(a, b, metric, len(pairs), float(xa.mean()), float(xb.mean()), ci["mean"],
                        ci["ci_low"], ci["ci_high"], wilcoxon_p(xa - xb))


# ----------------------------------------------------------------- Bradley-Terry

ELO_SCALE, ELO_BASE, ELO_INIT = 400.0, 10.0, 1000.0
# Outcome of a vote as (score of left, score of right); a tie and "both bad" split the point,
# as Chatbot Arena does.
VOTE_SCORES = {"left": (1.0, 0.0), "right": (0.0, 1.0), "tie": (0.5, 0.5), "both_bad": (0.5, 0.5)}


def bradley_terry(battles: list[tuple[str, str, str]], *, prior: float = 0.0, iters: int = 10000,
                  tol: float = 1e-10) -> dict[str, float]:
    """Fit Bradley-Terry strengths to (left, right, vote) battles; returns Elo-scale ratings.

    Uses Hunter's (2004) minorisation-maximisation updates, which converge to the maximum-likelihood
    strengths. A rating difference of 400 means 10:1 odds of winning; ratings are centred so
    their average is 1000. ``prior`` adds that many virtual ties between every pair that met,
    which keeps an undefeated variant's rating finite.
    """
    players = sorted({p for left, right, _ in battles for p in (left, right)})
    if not players:
        return {}
    idx = {p: i for i, p in enumerate(players)}
    m = len(players)
    wins = np.zeros((m, m))  # wins[i, j]: points i scored against j
    for left, right, vote in battles:
        if vote not in VOTE_SCORES or left == right:
            continue
        sl, sr = VOTE_SCORES[vote]
        i, j = idx[left], idx[right]
        wins[i, j] += sl
        wins[j, i] += sr
    games = wins + wins.T
    if prior:
        met = games > 0
        wins = wins + prior / 2 * met
        games = wins + wins.T
    total_wins = wins.sum(axis=1)
    p = np.ones(m)
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :] + 1e-300)).sum(axis=1)
        new = np.where(denom > 0, total_wins / np.maximum(denom, 1e-300), p)
        new = np.maximum(new, 1e-12)
        new = new / np.exp(np.mean(np.log(new)))  # fix the scale: geometric mean 1
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    ratings = ELO_INIT + ELO_SCALE * np.log(p) / np.log(ELO_BASE)
    return {player: float(ratings[idx[player]]) for player in players}


def bradley_terry_with_ci(battles: list[tuple[str, str, str]], *, prior: float = 0.5,
                          resamples: int = 200, seed: int = DEFAULT_SEED, confidence: float = 0.95) -> list[dict]:
    """Ratings with bootstrap intervals (battles resampled with replacement), best first."""
    ratings = bradley_terry(battles, prior=prior)
    if not ratings:
        return []
    counts = {p: 0 for p in ratings}
    for left, right, vote in battles:
        if vote in VOTE_SCORES:
            counts[left] += 1
            counts[right] += 1
    rng = np.random.default_rng(seed)
    samples = {p: [] for p in ratings}
    n = len(battles)
    for _ in range(resamples if n > 1 else 0):
        pick = rng.integers(0, n, n)
        boot = bradley_terry([battles[i] for i in pick], prior=prior, iters=2000, tol=1e-8)
        for player in ratings:
            if player in boot:
                samples[player].append(boot[player])
    alpha = (1 - confidence) / 2
    rows = []
    for player, rating in ratings.items():
        s = samples[player]
        low, high = (float(np.quantile(s, alpha)), float(np.quantile(s, 1 - alpha))) if s else (rating, rating)
        rows.append({"variant": player, "rating": rating, "ci_low": low, "ci_high": high, "battles": counts[player]})
    return sorted(rows, key=lambda r: r["rating"], reverse=True)
