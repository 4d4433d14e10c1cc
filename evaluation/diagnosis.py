"""Why the variants scored as they did, from their own metrics: the part of the verdict that names a cause.

A verdict of "neither yet" followed by a generic list ("add questions, check retrieval, train longer")
told a user with hit@k 0.83 to check retrieval, when half the answers restated the question. So each
finding here comes from a measured figure, says it, and carries the one next step that follows from it:

- answers that restate the question (echo) or loop on a phrase: the model is not reading its prompt;
- retrieval that found the gold documents while the answers did not use them, or that missed them;
- a fine-tune that saw a small share of the corpus's facts, with what covering them would cost on the
  machine that trained it (its measured training speed);
- intervals too wide to separate anything: more test questions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

NAMES = {"base": "the base model", "rag": "RAG", "ft": "the fine-tuned model", "ft+rag": "fine-tune + RAG"}
ECHO_WARN = 0.2  # a fifth of the answers restating the question is a property of the model, not noise
LOOP_WARN = 0.2
RETRIEVAL_FOUND = 0.7  # retrieval that found a gold source for this share of questions did its part
USED_PASSAGES = 0.5  # groundedness below this: most answer sentences are not in the passages shown
SMALL_COVERAGE = 0.5  # a fine-tune trained on less than half of the facts cannot know the rest
WIDE_INTERVAL = 0.1  # half-width of the primary metric's interval past which more questions are the fix


@dataclass
class Finding:
    variant: str
    cause: str  # echo | loop | unused_passages | retrieval | coverage | too_few_questions
    text: str
    next_step: str

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(v: dict, metric: str):
    return ((v.get("metrics") or {}).get(metric) or {}).get("mean")


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _name(v: dict, label: str) -> str:
    return NAMES.get(v.get("kind"), label)


def _answering(label: str, v: dict) -> list[Finding]:
    """Echoes and loops: the answers do not say anything the question did not."""
    out, name = [], _name(v, label)
    echo, loop = _mean(v, "echo_rate"), _mean(v, "loop_rate")
    prompt = _mean(v, "prompt_tokens")
    reading = f" with prompts of about {prompt:,.0f} tokens" if prompt and v.get("kind") in ("rag", "ft+rag") else ""
    step = ("fewer passages per answer (a shorter prompt), a larger model, or a fine-tune on answers that cite "
            "the passages (ft+rag)") if reading else "a larger model, or a fine-tune on answers in the test's shape"
    if echo is not None and echo >= ECHO_WARN:
        out.append(Finding(label, "echo", f"{echo:.0%} of {name}'s answers restate the question without answering "
                                          f"it (echo rate {echo:.2f}){reading}.", step))
    if loop is not None and loop >= LOOP_WARN:
        out.append(Finding(label, "loop", f"{loop:.0%} of {name}'s answers loop on a phrase (loop rate {loop:.2f})"
                                          f"{reading}.", step))
    return out


def _retrieval(label: str, v: dict) -> list[Finding]:
    if v.get("kind") not in ("rag", "ft+rag"):
        return []
    name = _name(v, label)
    hit, recall, grounded = _mean(v, "hit_at_k"), _mean(v, "context_recall"), _mean(v, "groundedness")
    found = hit if hit is not None else recall
    if found is None:
        return []
    shown = f"hit@k {hit:.2f}" if hit is not None else f"context recall {recall:.2f}"
    if found < RETRIEVAL_FOUND:
        return [Finding(label, "retrieval", f"Retrieval missed the gold documents for {name} ({shown}).",
                        "run `ragtune eval-retrieval` on these questions (document identities, chunking, "
                        "fusion) before changing the model")]
    if grounded is not None and grounded < USED_PASSAGES:
        return [Finding(label, "unused_passages",
                        f"Retrieval found the gold documents for {name} ({shown}) but the answers did not use "
                        f"them (groundedness {grounded:.2f}: most answer sentences are not in the passages).",
                        "fewer passages per answer, or a larger model that reads them")]
    return []


def coverage_share(v: dict) -> str | None:
    """"trained on 19 of the corpus's 1,577 facts (1.2%)" for a fine-tune that saw under SMALL_COVERAGE."""
    t = v.get("training") or {}
    trained, total = t.get("facts_trained"), t.get("facts_total")
    if v.get("kind") not in ("ft", "ft+rag") or not trained or not total or trained / total >= SMALL_COVERAGE:
        return None
    return f"trained on {trained:,} of the corpus's {total:,} facts ({trained / total:.1%})"


def _coverage(label: str, v: dict) -> list[Finding]:
    share = coverage_share(v)
    if share is None:
        return []
    t = v["training"]
    trained, total = t["facts_trained"], t["facts_total"]
    rows = (t.get("rows_trained") or 0) + (t.get("rows_left_out") or 0)
    tokens_all, epochs, speed = t.get("tokens_per_epoch_all"), t.get("epochs") or 1, t.get("tokens_per_s")
    if tokens_all and speed:
        cost = (f"Covering them all means {rows:,} rows, {tokens_all:,} tokens an epoch: about "
                f"{_minutes(tokens_all * epochs / speed)} of training on this machine at its measured "
                f"{speed:,.0f} tokens/s ({epochs:g} epochs); a larger model takes longer in proportion to its size.")
    else:
        cost = f"Covering them all means training on all {rows:,} generated rows."
    text = f"The fine-tune was {share}: it cannot know the other {total - trained:,}. {cost}"
    return [Finding(label, "coverage", text, "a fine-tune on all the facts (cost above) before judging fine-tuning")]


def _intervals(summary: dict, metric: str) -> list[Finding]:
    widths = [(m["ci_high"] - m["ci_low"]) / 2 for v in summary.get("variants", {}).values()
              if (m := (v.get("metrics") or {}).get(metric)) and m.get("ci_low") is not None]
    if not widths or max(widths) < WIDE_INTERVAL:
        return []
    n = summary.get("n")
    return [Finding("", "too_few_questions", f"On {n} questions the 95% intervals are up to ±{max(widths):.2f} wide.",
                    "more test questions, ideally written by people who did not read the passages first")]


def diagnose(summary: dict, metric: str) -> list[Finding]:
    """Every finding the evaluated variants' figures support, in the order a reader should act on them."""
    findings: list[Finding] = []
    for label, v in summary.get("variants", {}).items():
        findings += _retrieval(label, v) + _answering(label, v) + _coverage(label, v)
    return findings + _intervals(summary, metric)


def next_steps(findings: list[Finding], *, fine_tune_lost: bool) -> str:
    """One line of next steps drawn from the findings; never "train longer" when the fine-tune lost ground."""
    steps = list(dict.fromkeys(f.next_step for f in findings
                               if not (fine_tune_lost and f.cause == "coverage")))
    if not steps:
        return ("Next steps: more test questions narrow the intervals; `ragtune eval-retrieval` shows whether "
                "retrieval finds the documents.")
    return "Next steps: " + "; ".join(steps) + "."
