"""Chat messages as one plain-text prompt, for base models that were never taught a chat format.

A base model continues text. Shown a chat template it never saw, Gemma 3 270M repeated the first
line of its turn (ragtune's instruction, or the passages' label) instead of answering; shown the
passages and then "Question: ...\\nAnswer:", it answers on that line. The prompt therefore holds only
the user's text and the two labels ``Question:`` and ``Answer:``: nothing of ragtune's wording that
a model could copy into an answer.

    <system text, if any: the numbered passages for rag>

    Question: <earlier question>
    Answer: <earlier answer>

    Question: <question>
    Answer:

Messages may end with the start of the answer (an assistant message after the question); the prompt
then ends with it, and the model continues that answer.
"""

from __future__ import annotations

from .engine import Message, check_messages

QUESTION, ANSWER = "Question:", "Answer:"
# The answer ends where the model starts a new block: a blank line or a question of its own.
PLAIN_STOP = ["\n\n", "\nQuestion:"]
# Changes whenever the rendering or the answering of plain prompts does (v2: an answer stopped at a colon is
# continued, serving.variants), so cached evaluation answers of another format are not reused.
PLAIN_FORMAT = "question-answer-v2"


def render_plain(messages: list[Message]) -> str:
    """The prompt text (without BOS: the tokenizer adds it) for `messages`, ending with "Answer:" or with
    the start of the answer that the last message holds."""
    parts = []
    messages = check_messages(messages, open_answer=True)
    for i, m in enumerate(messages):
        text = m["content"].strip()
        if m["role"] == "assistant" and i == len(messages) - 1:
            parts.append(f" {text}")
            continue
        if m["role"] == "system":
            if text:
                parts.append(text + "\n\n")
        elif m["role"] == "user":
            parts.append(f"{QUESTION} {text}\n{ANSWER}")
        else:
            parts.append(f" {text}\n\n")
    return "".join(parts)


def newline_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that open with a new line, after any leading spaces, in ascending order.

    A piece spells a new line as itself, as byte-level BPE's "Ċ" or as SentencePiece's byte "<0x0A>";
    spaces as " ", "▁" or "Ġ". One pass over the vocabulary, added tokens included.
    """
    return sorted(i for piece, i in tokenizer.get_vocab().items()
                  if piece.lstrip(" \u2581\u0120").startswith(("\n", "\u010a", "<0x0A>")))
