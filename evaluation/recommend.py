"""The verdict: RAG, fine-tune, both, or neither yet, with the numbers behind it.

Rule, in words: take the variants that are not significantly worse than the best one on the
primary correctness metric (the 95% interval of the paired difference includes zero). If the
base model is among them, nothing has earned its cost yet: "neither". Otherwise pick the
simplest of them that is significantly better than the base model, in the order RAG (no
training, stays current, cites sources), fine-tune (no retrieval step, shorter prompts), both. Speed, cost, citations and freshness are then
spelled out so a business reader can overrule the order knowingly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .diagnosis import RETRIEVAL_FOUND, coverage_share, diagnose, next_steps

PREFERENCE = ("rag", "ft", "ft+rag")  # simplest first, when the evidence cannot separate them
VERDICT_OF = {"rag": "rag", "ft": "fine-tune", "ft+rag": "both"}
NAMES = {"base": "the base model", "rag": "RAG", "ft": "the fine-tuned model", "ft+rag": "fine-tune + RAG"}
METRIC_NAMES = {"judge_score": "LLM-judge score", "token_f1": "token F1", "semantic_similarity": "semantic similarity",
                "exact_match": "exact match"}
PRIMARY_ORDER = ("judge_score", "token_f1", "semantic_similarity", "exact_match")


def _signed(x) -> str:
    return f"{(round(x, 2) or 0.0):+.2f}"  # no "-0.00"


def _fmt(x, digits=2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(m: dict | None, digits=2) -> str:
    if not m or m.get("mean") is None:
        return "n/a"
    return f"{_fmt(m['mean'], digits)} (95% CI {_fmt(m['ci_low'], digits)}-{_fmt(m['ci_high'], digits)})"


def pick_primary(summary: dict) -> str:
    for metric in PRIMARY_ORDER:
        if all(metric in v["metrics"] for v in summary["variants"].values()) and summary["variants"]:
            return metric
    return "token_f1"


def _paired(summary: dict, a: str, b: str, metric: str) -> dict | None:
    """The paired comparison a - b, whichever order it was stored in."""
    for p in summary.get("paired", []):
        if p["metric"] != metric:
            continue
        if (p["a"], p["b"]) == (a, b):
            return p
        if (p["a"], p["b"]) == (b, a):
            flipped = dict(p, a=a, b=b, mean_a=p["mean_b"], mean_b=p["mean_a"],
                           mean_diff=-p["mean_diff"] if p["mean_diff"] is not None else None,
                           ci_low=-p["ci_high"] if p["ci_high"] is not None else None,
                           ci_high=-p["ci_low"] if p["ci_low"] is not None else None)
            return flipped
    return None


def _significantly_better(summary, a, b, metric) -> bool:
    p = _paired(summary, a, b, metric)
    return bool(p and p["ci_low"] is not None and p["ci_low"] > 0)


def recommend(summary: dict, primary: str | None = None) -> dict:
    variants = summary.get("variants", {})
    if not variants:
        return {"verdict": "neither", "label": "Not enough evidence", "text": "No variant was evaluated.",
                "evidence": [], "primary_metric": None}
    metric = primary or pick_primary(summary)
    race = _Race.of(summary, metric)
    if not race.scored:
        return {"verdict": "neither", "label": "Not enough evidence", "primary_metric": metric, "evidence": [],
                "text": f"No answer could be scored on {race.mname}."}
    evidence = [{"variant": label, "metric": metric, **{k: variants[label]["metrics"][metric][k]
                                                       for k in ("mean", "ci_low", "ci_high", "n")}}
                for label in sorted(race.scored, key=lambda label: -race.means[label])]
    if race.base is not None and race.base in race.contenders:
        verdict, choice, lines = "neither", race.base, _neither_lines(race)
    else:
        verdict, choice, lines = _winner_lines(race)
    losses = _losses(race)
    lines[1:1] = [x["text"] for x in losses]
    # What the figures say went wrong, each with its measure, and the next steps that follow from them.
    findings = diagnose(summary, metric)
    lines += _findings_lines(findings, losses, race.kind_of)
    lines.append("Trade-offs:")
    lines.extend("- " + t for t in _tradeoffs(variants, race.kind_of))
    return {"verdict": verdict, "label": _label(verdict), "choice": choice, "primary_metric": metric,
            "text": "\n".join(lines), "evidence": evidence, "comparisons": race.comparisons, "losses": losses,
            "findings": [f.to_dict() for f in findings]}


@dataclass
class _Race:
    """The variants scored on the primary metric: their means, the best, those the evidence cannot separate
    from it (contenders) and the base model; every comparison written into the text is kept in order."""
    summary: dict
    metric: str
    mname: str
    means: dict[str, float | None]
    scored: list[str]
    kind_of: dict[str, str]
    best: str | None
    contenders: list[str]
    base: str | None
    comparisons: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, summary: dict, metric: str) -> "_Race":
        variants = summary["variants"]
        means = {label: (v["metrics"].get(metric) or {}).get("mean") for label, v in variants.items()}
        scored = [label for label in variants if means[label] is not None]
        best = max(scored, key=lambda label: means[label]) if scored else None
        contenders = [label for label in scored
                      if label == best or not _significantly_better(summary, best, label, metric)]
        base = next((label for label in scored if variants[label]["kind"] == "base"), None)
        return cls(summary, metric, METRIC_NAMES.get(metric, metric), means, scored,
                   {label: v["kind"] for label, v in variants.items()}, best, contenders, base)

    def name(self, label: str) -> str:
        return NAMES.get(self.kind_of[label], label)

    def ci(self, label: str) -> str:
        return _ci(self.summary["variants"][label]["metrics"][self.metric])

    def beats(self, a: str, b: str) -> bool:
        return _significantly_better(self.summary, a, b, self.metric)

    def compare(self, a: str, b: str) -> str:
        """The paired difference a - b in words (kept in `comparisons`), or "" when it was not measured."""
        p = _paired(self.summary, a, b, self.metric)
        if not p or p["mean_diff"] is None:
            return ""
        self.comparisons.append({k: p[k] for k in ("a", "b", "metric", "n", "mean_diff", "ci_low", "ci_high",
                                                   "p_value")})
        verdict = "significant" if (p["ci_low"] > 0 or p["ci_high"] < 0) else "within noise"
        pv = f", Wilcoxon p={p['p_value']:.3g}" if p.get("p_value") is not None else ""
        return (f"difference {_signed(p['mean_diff'])} (95% CI {_signed(p['ci_low'])} to {_signed(p['ci_high'])}, "
                f"{verdict}{pv})")


def _neither_lines(race: _Race) -> list[str]:
    """The base model is among the contenders: nothing has earned its cost yet."""
    base, n = race.base, race.summary.get("n")
    lines = [f"Neither yet: on {n} questions no approach answers significantly better than the base model "
             f"({race.mname} {race.ci(base)})."]
    for label in race.scored:
        if label != base:
            lines.append(f"- {race.name(label)}: {race.ci(label)}; " + race.compare(label, base))
    return lines


def _winner_lines(race: _Race) -> tuple[str, str, list[str]]:
    """(verdict, choice, lines): the simplest contender that clearly beats the base model (when the base model
    was evaluated), compared with every other variant."""
    base, best, n = race.base, race.best, race.summary.get("n")
    beats_base = [label for label in race.contenders if base is None or race.beats(label, base)]
    choice = next((label for kind in PREFERENCE for label in beats_base if race.kind_of[label] == kind), best)
    verdict = VERDICT_OF.get(race.kind_of[choice], "neither")
    lines = [f"Recommendation: {_label(verdict)}. On {n} questions, {race.name(choice)} scores "
             f"{race.mname} {race.ci(choice)}."]
    if base is not None:
        lines.append(f"- vs {NAMES['base']} ({race.ci(base)}): " + race.compare(choice, base))
    for label in race.scored:
        if label not in (choice, base):
            lines.append(f"- vs {race.name(label)} ({race.ci(label)}): " + race.compare(choice, label))
    if choice != best:
        lines.append(f"{race.name(best)} scores higher, but not significantly: the simpler option wins the tie.")
    skipped = [label for label in race.contenders if label not in beats_base]
    if skipped:
        lines.append("Not chosen although simpler: " + ", ".join(race.name(label) for label in skipped)
                     + f" (not significantly better than {NAMES['base']}).")
    return verdict, choice, lines


def _losses(race: _Race) -> list[dict]:
    """Each variant significantly worse than the base model, with what its metrics say went wrong."""
    base, variants = race.base, race.summary["variants"]
    if base is None:
        return []
    return [explain_loss(variants[label], race.kind_of[label], label, race.compare(label, base), race.mname)
            for label in race.scored if label != base and race.beats(base, label)]


def _findings_lines(findings: list, losses: list[dict], kind_of: dict[str, str]) -> list[str]:
    """The diagnosis not already told by a loss's explanation, then the next steps."""
    explained = {(x["variant"], x["cause"]) for x in losses}
    shown = [f for f in findings if (f.variant, f.cause) not in explained]
    lines = ["What the figures show:", *("- " + f.text for f in shown)] if shown else []
    fine_tune_lost = any(kind_of[x["variant"]] in ("ft", "ft+rag") for x in losses)
    return lines + [next_steps(findings, fine_tune_lost=fine_tune_lost)]


def explain_loss(v: dict, kind: str, label: str, difference: str, mname: str) -> dict:
    """Why a variant answers significantly worse than the base model, as far as its metrics tell."""
    m = v.get("metrics", {})

    def mean(key):
        return (m.get(key) or {}).get("mean")

    name = NAMES.get(kind, label)
    text = f"Warning: {name} answers significantly WORSE than the base model on {mname}: {difference}."
    hit, recall, grounded, cited = mean("hit_at_k"), mean("context_recall"), mean("groundedness"), mean("citation_rate")
    if kind not in ("rag", "ft+rag"):
        cause = "training"
        share = coverage_share(v)
        text += " The fine-tune itself lost ground" + (f": it was {share}" if share else "")
        text += ("; check the training set (held-out loss, answers in the shape of the test questions) before "
                 "spending more training on it.")
    elif hit is None and recall is None:
        cause = "unknown"
        text += " The test set names no gold documents, so retrieval cannot be told apart from the answers."
    elif (hit if hit is not None else recall) < RETRIEVAL_FOUND:
        cause = "retrieval"
        shown = f"hit@k {hit:.2f}" if hit is not None else f"context recall {recall:.2f}"
        text += (f" Likely cause: retrieval missed the gold documents ({shown}): the passages shown did not hold the "
                 "answer, and they crowd out what the model knows. Check `ragtune eval-retrieval` on these questions "
                 "(document identities, chunking) before changing the model.")
    else:
        cause = "generation"
        shown = f"hit@k {hit:.2f}" if hit is not None else f"context recall {recall:.2f}"
        used = ", ".join(x for x in (f"groundedness {grounded:.2f}" if grounded is not None else "",
                                     f"citation rate {cited:.2f}" if cited is not None else "") if x)
        text += (f" Likely cause: retrieval found the gold documents ({shown}) but the answers did not use the "
                 f"passages{f' ({used})' if used else ''}: the model is too small to read them. Try fewer passages "
                 "per answer, a larger model, or a fine-tune on cited answers (ft+rag).")
    return {"variant": label, "cause": cause, "text": text}


def _label(verdict: str) -> str:
    return {"rag": "RAG", "fine-tune": "Fine-tune", "both": "Fine-tune + RAG", "neither": "Neither yet"}[verdict]


def _tradeoffs(variants: dict, kind_of: dict) -> list[str]:
    out = ["Freshness: RAG answers from the current documents as soon as they are re-indexed; a fine-tune "
           "only knows what it was trained on and must be retrained when documents change."]

    def mean(label, metric):
        return ((variants[label]["metrics"].get(metric)) or {}).get("mean")

    lat = [f"{NAMES.get(kind_of[label], label)} {mean(label, 'latency_s'):.2f} s" for label in variants
           if mean(label, "latency_s") is not None]
    if lat:
        out.append("Latency (mean per answer): " + ", ".join(lat) + ". Retrieval adds prompt tokens and time.")
    cost = []
    for label, v in variants.items():
        c = v.get("cost") or {}
        piece = f"{NAMES.get(kind_of[label], label)} {c.get('tokens_served', 0)} tokens served"
        if c.get("training_time_s"):
            piece += f" + {c['training_time_s'] / 60:.1f} min training"
        if c.get("gpu_hours"):
            piece += f" ({c['gpu_hours']:.2f} GPU-hours)"
        cost.append(piece)
    out.append("Cost: " + "; ".join(cost) + ".")
    cites = [f"{NAMES.get(kind_of[label], label)} citation accuracy {_ci(v['metrics'].get('citation_accuracy'))}, "
             f"groundedness {_ci(v['metrics'].get('groundedness'))}"
             for label, v in variants.items() if kind_of[label] in ("rag", "ft+rag")]
    out.append("Citations: " + ("; ".join(cites) if cites else "none of the evaluated variants retrieves, so no answer "
                                "can cite a source") + ". Only variants with retrieval can show where an answer comes from.")
    return out
