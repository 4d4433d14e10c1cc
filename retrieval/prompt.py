"""Put retrieved passages into a chat prompt with numbered citations, within a token budget.

Nothing a model can copy into an answer comes from ragtune's own text: the only worked example a
prompt carries is built from the user's corpus (a labelled field of a passage that was not
retrieved); serving.prompts.clean_answer drops echoed passage headers from answers. ``prompt_leaks`` finds ragtune's
own prompt wording in an answer; the evaluation reports it and a test checks it stays empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

DEFAULT_SYSTEM = (
    "You answer questions about the user's documents. Use only the numbered passages below. "
    "After each fact, cite its passage like [1] or [2]. If the passages do not contain the answer, "
    "say that the documents do not say."
)


@dataclass
class WorkedExample:
    """One question answered from one passage of the user's own corpus, shown before the real question."""
    passage: str
    question: str
    answer: str
    source: str = ""  # the chunk it came from, for explanations
    where: str = ""   # "file.pdf, page 2", shown the way real passages are headed

    def messages(self) -> list[dict]:
        head = f"[1] {self.where}:\n" if self.where else "[1] "
        return [{"role": "user", "content": f"Passages:\n\n{head}{self.passage}\n\nQuestion: {self.question}"},
                {"role": "assistant", "content": self.answer}]


# "Label: value" as forms and fact sheets write it; the label is a few words, the value short.
_FIELD = re.compile(r"(?m)^\s*([A-Z][A-Za-z/&() -]{2,40}?):\s+([^:\n]{2,60}?)\s*$")


def example_from_text(text: str, about: str) -> WorkedExample | None:
    """A worked example from a passage that states a labelled field ("Location: Tallahassee, FL")."""
    for label, value in _FIELD.findall(text or ""):
        label, value = " ".join(label.split()), " ".join(value.split())
        if len(label.split()) > 5 or not re.search(r"[A-Za-z0-9]", value) or value.lower() in ("none", "n/a", "yes", "no"):
            continue
        passage = f"{label}: {value}"
        return WorkedExample(passage, f"What is the {label.lower()} of {about}?", f"{value} [1].")
    return None


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token in English) used when none is given."""
    return max(1, (len(text) + 3) // 4)


def passage_header(n: int, passage) -> str:
    where = passage.doc + (f", page {passage.page}" if passage.page else "")
    return f"[{n}] {where}:"


def build_rag_messages(question: str, passages, *, count_tokens: Callable[[str], int] | None = None,
                       max_context_tokens: int = 1200, system: str | None = None,
                       history: list[dict] | None = None,
                       example: WorkedExample | None = None, style: str = "chat") -> tuple[list[dict], list]:
    """Chat messages asking `question` over `passages`; returns (messages, passages used, in citation order).

    ``style="plain"`` (for base models, rendered by ``serving.plain_prompt``) puts the numbered
    passages alone in the system message and the bare question in the user message: no label or
    instruction of ragtune's own; `system`, when given, is the user's own text put before them.

    Passages are taken in rank order while they fit in `max_context_tokens`; one that does not
    fit is skipped (a shorter later one may still fit). If not even the first fits, it is cut to
    the budget, so the model always sees the best passage. `example`, when given, is one worked
    turn built from the user's corpus; it comes out of the same budget.
    """
    count = count_tokens or approx_tokens
    demo = example.messages() if example else []
    if demo:
        max_context_tokens = max(32, max_context_tokens - sum(count(m["content"]) + 8 for m in demo))
    used, blocks, spent = [], [], 0
    for p in passages:
        block = f"{passage_header(len(used) + 1, p)}\n{p.text.strip()}"
        cost = count(block) + 2
        if spent + cost > max_context_tokens:
            continue
        used.append(p)
        blocks.append(block)
        spent += cost
    if not used and passages:
        p = passages[0]
        header = passage_header(1, p)
        text = p.text.strip()
        budget = max(1, max_context_tokens - count(header) - 2)
        while text and count(text) > budget:
            text = text[: int(len(text) * budget / count(text) * 0.95)]
        used, blocks = [p], [f"{header}\n{text}"]
    if style == "plain":
        context = "\n\n".join(([system.strip()] if system and system.strip() else []) + blocks)
        messages = [{"role": "system", "content": context}] if context else []
        messages += [m for m in (history or []) if m.get("role") in ("user", "assistant")]
        messages.append({"role": "user", "content": question.strip()})
        return messages, used
    context = "\n\n".join(blocks) if blocks else "(no passages were found)"
    user = f"Passages:\n\n{context}\n\nQuestion: {question.strip()}"
    messages = [{"role": "system", "content": system or DEFAULT_SYSTEM}]
    messages += demo
    messages += [m for m in (history or []) if m.get("role") in ("user", "assistant")]
    messages.append({"role": "user", "content": user})
    return messages, used


def prompt_leaks(answer: str, texts: list[str], words: int = 6) -> list[str]:
    """Runs of `words` consecutive words of `texts` (ragtune's own prompt wording) that appear in `answer`."""
    norm = lambda s: re.findall(r"[a-z0-9]+", s.lower())  # noqa: E731
    have = norm(answer)
    grams = {" ".join(have[i:i + words]) for i in range(len(have) - words + 1)}
    found = []
    for text in texts:
        w = norm(text)
        found += [" ".join(w[i:i + words]) for i in range(len(w) - words + 1) if " ".join(w[i:i + words]) in grams]
    return list(dict.fromkeys(found))
