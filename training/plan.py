"""The plan of a training run, made before it starts: which rows, how many epochs and steps, how long.

``make_plan`` takes the measured tokens/s (``training.precision``) and, when there is a time budget,
keeps the most useful rows that fit: whole facts (every training wording of a fact, or none of it),
fact-bearing ones (answers with numbers or codes) first, duplicates dropped, taken in turn from each
document so no document crowds out the others. Epochs stay as configured while enough rows fit; a
budget too small for even a few rows is refused before anything starts. Validation is a sample sized
to a small share of the budget (or skipped), so it cannot dominate a run.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field

from ragtune.errors import BadInputError

MIN_USEFUL_ROWS = 16  # fewer rows than this teaches too little to be worth the time
EVAL_SHARE = 0.05  # of the time budget, for all evaluations together
MAX_EVAL_ROWS = 64
MIN_EVAL_ROWS = 8
EVAL_COST = 1 / 3  # a forward pass without backward costs about a third of a training step per token
SAVE_S = 10.0  # writing the adapter and registering it
MARGIN = 0.08  # of the training time, kept free so that a run planned to fit does fit
# The trainer does more per step than the probe times (gradient clipping, the scheduler, collation, its
# logs): Gemma 3 270M on nih-protocols (bf16, 512-token packs, training/lm_head.py on both sides) trained its
# first 20 steps at 101.6 tokens/s where the probe measured 116.4 (1.15), and 85.6 over the whole run while
# tests ran on the other core (docs/training.md).
TRAINER_OVERHEAD = 1.2


@dataclass
class TrainPlan:
    rows: int
    rows_total: int
    facts: int
    facts_total: int
    tokens_per_epoch: int
    epochs: float
    steps: int
    tokens_per_s: float | None
    train_s: float | None  # expected training time (the trainer's own runtime)
    eval_rows: int
    eval_s: float | None
    setup_s: float  # spent before training: loading, measuring
    total_s: float | None  # expected wall time of the whole job
    budget_s: float | None
    left_out: dict = field(default_factory=dict)
    note: str = ""
    probe_s: float = 0.0  # of setup_s, spent timing precisions and thread counts
    tokens_per_epoch_all: int = 0  # one epoch over every row, left-out ones included: what covering it all costs
    kept: list[int] = field(default_factory=list)  # indices of the training rows kept
    eval_kept: list[int] = field(default_factory=list)  # indices of the validation rows used

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the log, the CLI and the UI."""
        def minutes(s):
            return "unknown" if s is None else (f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s")
        text = (f"plan: {self.rows} of {self.rows_total} rows ({self.facts} facts), {self.tokens_per_epoch:,} tokens "
                f"x {self.epochs:g} epochs, {self.steps} steps; {self.tokens_per_s or '?'} tokens/s measured "
                f"(about {round(self.tokens_per_s / TRAINER_OVERHEAD, 1) if self.tokens_per_s else '?'} in training): "
                f"training {minutes(self.train_s)}, about {minutes(self.total_s)} in all")
        if self.budget_s:
            text += f" (budget {minutes(self.budget_s)})"
        if self.probe_s:
            share = f", {100 * self.probe_s / self.budget_s:.0f}% of the budget" if self.budget_s else ""
            text += f"; measuring precision took {minutes(self.probe_s)}{share}"
        if self.eval_rows:
            text += f"; validation on {self.eval_rows} rows"
        if self.note:
            text += f"; {self.note}"
        return text


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _fact_bearing(answer: str) -> bool:
    return re.search(r"\d|\b[A-Z]{2,}-?\w*\b", answer) is not None


def useful_order(meta: list[dict]) -> list[list[int]]:
    """Groups of row indices (one group per fact), most useful first; duplicate rows and facts dropped."""
    groups: dict[str, list[int]] = {}
    seen_rows: set[tuple[str, str]] = set()
    answer_owner: dict[str, str] = {}
    for i, m in enumerate(meta):
        question, answer = _norm(m.get("question", "")), _norm(m.get("answer", ""))
        if (question, answer) in seen_rows:
            continue
        seen_rows.add((question, answer))
        fact = m.get("fact") or answer
        owner = answer_owner.setdefault(answer, fact)
        if owner != fact:  # the same answer under another fact id: a repeated passage, keep one
            continue
        groups.setdefault(fact, []).append(i)
    by_doc: dict[tuple[bool, str], list[list[int]]] = {}
    for fact, rows in groups.items():
        first = meta[rows[0]]
        key = (not _fact_bearing(first.get("answer", "")), str(first.get("doc") or ""))
        by_doc.setdefault(key, []).append(rows)
    ordered: list[list[int]] = []
    for bearing in (False, True):  # fact-bearing first (key False), then the rest
        queues = [q for (b, _), q in sorted(by_doc.items()) if b == bearing]
        for round_ in range(max((len(q) for q in queues), default=0)):
            ordered.extend(q[round_] for q in queues if round_ < len(q))
    return ordered


def _steps(row_tokens: list[int], max_length: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    """Optimizer steps with best-fit packing (first-fit decreasing, as trl packs)."""
    bins: list[int] = []
    for n in sorted((min(t, max_length) for t in row_tokens), reverse=True):
        for b, used in enumerate(bins):
            if used + n <= max_length:
                bins[b] += n
                break
        else:
            bins.append(n)
    per_epoch = max(1, math.ceil(math.ceil(len(bins) / batch_size) / grad_accum))
    return max(1, math.ceil(per_epoch * epochs))


def make_plan(meta: list[dict], lengths: list[int], val_lengths: list[int], *, epochs: float, max_length: int,
              batch_size: int, grad_accum: int, tokens_per_s: float | None, budget_s: float | None,
              setup_s: float, eval_each_epoch: bool, seed: int = 0, probe_s: float = 0.0) -> TrainPlan:
    """Rows, epochs, steps and expected times; with a budget, the most useful rows that fit in it."""
    groups = useful_order(meta)
    measured = tokens_per_s
    tokens_per_s = tokens_per_s / TRAINER_OVERHEAD if tokens_per_s else None  # what training will reach
    kept_groups, note = groups, ""
    if budget_s and tokens_per_s:
        kept_groups, epochs, note = _fit_budget(groups, lengths, epochs, tokens_per_s, budget_s, setup_s)
    kept = sorted(i for g in kept_groups for i in g)
    row_tokens = [lengths[i] for i in kept]
    tokens_per_epoch = sum(min(t, max_length) for t in row_tokens)
    train_s = tokens_per_epoch * epochs / tokens_per_s if tokens_per_s else None
    eval_kept: list[int] = []
    eval_s = None
    if eval_each_epoch and val_lengths:
        eval_kept = _validation_sample(val_lengths, epochs, tokens_per_s, budget_s, seed)
        if not eval_kept:
            note = "; ".join(x for x in (note, "validation skipped: the budget is tight") if x)
        elif tokens_per_s:
            eval_s = sum(val_lengths[i] for i in eval_kept) * EVAL_COST / tokens_per_s * max(1, math.ceil(epochs))
    total_s = None if train_s is None else setup_s + train_s + (eval_s or 0.0) + SAVE_S
    return TrainPlan(
        rows=len(kept), rows_total=len(meta), facts=len(kept_groups), facts_total=len(groups),
        tokens_per_epoch=tokens_per_epoch, epochs=epochs,
        steps=_steps(row_tokens, max_length, batch_size, grad_accum, epochs), tokens_per_s=measured,
        train_s=None if train_s is None else round(train_s, 1), eval_rows=len(eval_kept),
        eval_s=None if eval_s is None else round(eval_s, 1), setup_s=round(setup_s, 1),
        total_s=None if total_s is None else round(total_s, 1), budget_s=budget_s,
        left_out=_left_out(meta, groups, kept_groups), note=note, probe_s=round(probe_s, 1),
        tokens_per_epoch_all=sum(min(t, max_length) for t in lengths), kept=kept, eval_kept=eval_kept)


def _fit_budget(groups: list[list[int]], lengths: list[int], epochs: float, tokens_per_s: float, budget_s: float,
                setup_s: float) -> tuple[list[list[int]], float, str]:
    """(the facts kept, the epochs, a note): the most useful whole facts that fit the budget at the configured
    epochs, else at fewer whole epochs; refused where not even MIN_USEFUL_ROWS rows fit one epoch."""
    # What is left after setup, saving and evaluation, less a margin for a machine that gets busier.
    train_budget = (budget_s * (1 - EVAL_SHARE) - setup_s - SAVE_S) * (1 - MARGIN)
    if train_budget <= 0:
        raise BadInputError(
            f"The time budget of {budget_s / 60:.1f} min is used up before training starts (loading and "
            f"measuring took {setup_s:.0f} s); raise --time-budget.")
    for try_epochs in _epoch_choices(epochs):
        fit = _fit(groups, lengths, train_budget * tokens_per_s / try_epochs)
        if sum(len(g) for g in fit) >= min(MIN_USEFUL_ROWS, sum(len(g) for g in groups)):
            note = f"epochs lowered from {epochs:g} to {try_epochs:g} to fit the budget" if try_epochs != epochs else ""
            return fit, try_epochs, note
    one_epoch = sum(sorted(lengths)[:MIN_USEFUL_ROWS]) / tokens_per_s
    raise BadInputError(
        f"No useful training fits in the time budget of {budget_s / 60:.1f} min: at the measured "
        f"{tokens_per_s} tokens/s even one epoch of the {MIN_USEFUL_ROWS} shortest rows takes "
        f"{one_epoch / 60:.1f} min after {setup_s:.0f} s of setup. Raise --time-budget (or 0 for none).")


def _validation_sample(val_lengths: list[int], epochs: float, tokens_per_s: float | None, budget_s: float | None,
                       seed: int) -> list[int]:
    """Indices of a seeded sample of validation rows, at most MAX_EVAL_ROWS and, with a budget, what
    EVAL_SHARE of it pays for; none where that is fewer than MIN_EVAL_ROWS."""
    order = list(range(len(val_lengths)))
    random.Random(seed).shuffle(order)
    n = min(MAX_EVAL_ROWS, len(order))
    if budget_s and tokens_per_s:
        evaluations = max(1, math.ceil(epochs))
        mean = sum(val_lengths) / len(val_lengths)
        affordable = EVAL_SHARE * budget_s * tokens_per_s / EVAL_COST / evaluations / max(mean, 1)
        if affordable < n:
            n = int(affordable)
            if n < MIN_EVAL_ROWS:
                n = 0
    return sorted(order[:n])


def _left_out(meta: list[dict], groups: list[list[int]], kept_groups: list[list[int]]) -> dict:
    """What the plan leaves out: rows and facts over the budget, the documents left with no row, duplicates."""
    left_groups = [g for g in groups if g not in kept_groups]
    left_out = {}
    if left_groups:
        left_rows = sum(len(g) for g in left_groups)
        docs_left = {str(meta[g[0]].get("doc") or "") for g in left_groups} - {
            str(meta[g[0]].get("doc") or "") for g in kept_groups}
        left_out = {"rows": left_rows, "facts": len(left_groups), "documents_without_rows": sorted(docs_left)[:20],
                    "reason": "time budget"}
    duplicates = len(meta) - sum(len(g) for g in groups)
    if duplicates:
        left_out["duplicates"] = duplicates
    return left_out


def _epoch_choices(epochs: float) -> list[float]:
    whole = [float(e) for e in range(math.ceil(epochs) - 1, 0, -1) if e < epochs]
    return [epochs, *whole]


def _fit(groups: list[list[int]], lengths: list[int], token_budget: float) -> list[list[int]]:
    kept, used = [], 0
    for g in groups:
        cost = sum(lengths[i] for i in g)
        if used + cost <= token_budget:
            kept.append(g)
            used += cost
    return kept
