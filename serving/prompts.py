"""Prompt templates for the assistant variants, in one place, editable per workspace.

A workspace overrides any of them with the setting ``"prompts"`` (a dict with the same keys);
what it leaves out keeps the default. An empty string means "no system prompt".
"""

from __future__ import annotations

import re

from ragtune.errors import BadInputError

DEFAULT_PROMPTS: dict[str, str] = {
    # base and ft see the question alone: an adapter answers best in the shape it was trained on.
    "base_system": "",
    "ft_system": "",
    # rag and ft+rag see numbered passages; the retrieval prompt builder puts this before them.
    "rag_system": (
        "Answer the question using only the numbered passages. Cite each passage you use with its "
        "number in brackets, like [1]. If the passages do not contain the answer, say that you do not know."
    ),
}
SETTING = "prompts"


def default_prompts() -> dict[str, str]:
    return dict(DEFAULT_PROMPTS)


def get_prompts(ws=None) -> dict[str, str]:
    """The prompts a workspace uses: its overrides on top of the defaults."""
    prompts = default_prompts()
    if ws is not None:
        prompts.update({k: v for k, v in (ws.get_setting(SETTING, {}) or {}).items() if k in DEFAULT_PROMPTS})
    return prompts


def user_prompts(ws=None) -> dict[str, str]:
    """Only the prompts this workspace set itself (every other key empty): for plain-text prompts,
    which must carry no wording of ragtune's own."""
    own = (ws.get_setting(SETTING, {}) or {}) if ws is not None else {}
    return {k: (own.get(k) or "") for k in DEFAULT_PROMPTS}


def set_prompts(ws, overrides: dict[str, str]) -> dict[str, str]:
    """Store overrides for some prompts (unknown keys are refused); returns the prompts now in use."""
    unknown = sorted(set(overrides) - set(DEFAULT_PROMPTS))
    if unknown:
        raise BadInputError(f"Unknown prompt {', '.join(unknown)}: the prompts are {', '.join(DEFAULT_PROMPTS)}.")
    for key, value in overrides.items():
        if not isinstance(value, str):
            raise BadInputError(f"The prompt '{key}' must be text.")
    current = dict(ws.get_setting(SETTING, {}) or {})
    current.update(overrides)
    ws.set_setting(SETTING, current)
    return get_prompts(ws)


def reset_prompts(ws) -> dict[str, str]:
    ws.set_setting(SETTING, {})
    return default_prompts()


def system_prompt(prompts: dict[str, str], variant: str) -> str:
    key = {"base": "base_system", "ft": "ft_system", "rag": "rag_system", "ft+rag": "rag_system"}[variant]
    return prompts.get(key, "")


_HEADER_ECHO = re.compile(
    r"\[(\d{1,2})\]\s*(?:\(\s*)?[^\s\[\]()]+\.(?:pdf|docx?|pptx?|html?|md|txt|csv|jsonl|eml|rtf)"
    r"(?:#page=\d+|,\s*page\s*\d+)?(?:,\s*section\s*\"[^\"]*\")?\s*\)?\s*:?", re.I)
_BARE_SOURCE = re.compile(
    r"\(?\b[^\s\[\]()]+\.(?:pdf|docx?|pptx?|html?|md|txt|csv|jsonl|eml|rtf)(?:#page=\d+|,\s*page\s*\d+)"
    r"(?:,\s*section\s*\"[^\"]*\")?\)?:?", re.I)


def clean_answer(text: str) -> str:
    """An answer without echoed passage headers: "[2] x.pdf, page 3: ..." keeps only the citation "[2]"."""
    text = _HEADER_ECHO.sub(lambda m: f"[{m.group(1)}] ", text)
    text = _BARE_SOURCE.sub("", text)
    for marker in ("\nPassages:", "\nQuestion:"):
        text = text.split(marker)[0]
    text = re.sub(r"[ \t]+([.,;:])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()
