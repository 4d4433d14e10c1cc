"""Put retrieved passages into a chat prompt with numbered citations, within a token budget."""

from __future__ import annotations

from typing import Callable

DEFAULT_SYSTEM = (
    "You answer questions about the user's documents. Use only the numbered passages below. "
    "After each fact, cite its passage like [1] or [2]. If the passages do not contain the answer, "
    "say that the documents do not say."
)


# Small base models (Gemma 3 270M) shown only instructions and passages repeat the prompt instead
# of answering; one worked example turn shows the expected shape: a short answer citing [n].
DEMONSTRATION = [
    {"role": "user", "content": "Passages:\n\n[1] (example.md)\nThe Lumo desk lamp runs for 8 hours on one charge "
                                "and charges over USB-C.\n\nQuestion: How long does the Lumo desk lamp run on one charge?"},
    {"role": "assistant", "content": "The Lumo desk lamp runs for 8 hours on one charge [1]."},
]


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token in English) used when none is given."""
    return max(1, (len(text) + 3) // 4)


def passage_header(n: int, passage) -> str:
    where = passage.citation
    if passage.section:
        where += f", section \"{passage.section.split(' > ')[-1]}\""
    return f"[{n}] ({where})"


def build_rag_messages(question: str, passages, *, count_tokens: Callable[[str], int] | None = None,
                       max_context_tokens: int = 1200, system: str | None = None,
                       history: list[dict] | None = None, demonstration: bool = True) -> tuple[list[dict], list]:
    """Chat messages asking `question` over `passages`; returns (messages, passages used, in citation order).

    Passages are taken in rank order while they fit in `max_context_tokens`; one that does not
    fit is skipped (a shorter later one may still fit). If not even the first fits, it is cut to
    the budget, so the model always sees the best passage.
    """
    count = count_tokens or approx_tokens
    if demonstration:  # the example turn comes out of the same budget, so the caller's total still holds
        max_context_tokens = max(32, max_context_tokens - sum(count(m["content"]) + 8 for m in DEMONSTRATION))
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
    context = "\n\n".join(blocks) if blocks else "(no passages were found)"
    user = f"Passages:\n\n{context}\n\nQuestion: {question.strip()}"
    messages = [{"role": "system", "content": system or DEFAULT_SYSTEM}]
    if demonstration:
        messages += DEMONSTRATION
    messages += [m for m in (history or []) if m.get("role") in ("user", "assistant")]
    messages.append({"role": "user", "content": user})
    return messages, used
