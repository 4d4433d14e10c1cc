"""Optional LLM judge through any OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API).

The full prompt is ``JUDGE_PROMPT``; the report and the UI show it verbatim so nobody has to
trust a hidden rubric. A reply the parser cannot read scores ``None`` (left out of the means),
never a guessed number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragtune.errors import ServerUnavailableError

JUDGE_PROMPT = """You grade answers to questions about a company's documents.

Question: {question}
Reference answer (correct): {reference}
Answer to grade: {answer}

Does the answer state the same facts as the reference? Ignore wording and extra politeness;
penalise missing, wrong or contradicting facts. An answer that declines to answer scores 0.
Reply with one line: SCORE: <a number from 0 to 10>, then one short sentence of reasons."""

_SCORE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass
class JudgeConfig:
    url: str  # base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = "not-needed"
    timeout_s: float = 60.0
    max_tokens: int = 64
    max_retries: int = 2

    def describe(self) -> dict:
        return {"url": self.url, "model": self.model, "prompt": JUDGE_PROMPT}


def parse_score(text: str) -> float | None:
    """'SCORE: 7 ...' -> 0.7; None when there is no score from 0 to 10."""
    m = _SCORE.search(text or "")
    if not m:
        return None
    value = float(m.group(1))
    return value / 10 if 0 <= value <= 10 else None


def judge_answer(config: JudgeConfig, question: str, reference: str, answer: str) -> dict:
    """{"judge_score": 0..1 | None, "judge_reply": text}."""
    from openai import APIConnectionError, APIError, OpenAI

    client = OpenAI(base_url=config.url, api_key=config.api_key or "not-needed", timeout=config.timeout_s,
                    max_retries=config.max_retries)
    prompt = JUDGE_PROMPT.format(question=question, reference=reference, answer=answer or "(empty)")
    try:
        reply = client.chat.completions.create(model=config.model, temperature=0.0, max_tokens=config.max_tokens,
                                               messages=[{"role": "user", "content": prompt}])
    except APIConnectionError:
        raise ServerUnavailableError(f"The judge endpoint {config.url} cannot be reached; start it or drop --judge-url.") from None
    except APIError as exc:
        raise ServerUnavailableError(f"The judge endpoint {config.url} refused the request: {exc}") from None
    text = reply.choices[0].message.content or ""
    return {"judge_score": parse_score(text), "judge_reply": text.strip()}
