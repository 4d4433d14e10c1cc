"""A base model with no chat template of its own is prompted as plain text: the user's passages, then
"Question: ...\\nAnswer:". Nothing of ragtune's own wording is in such a prompt (issue 12)."""

from __future__ import annotations

import json
import shutil

import pytest

from ragtune.models import resolve_llm
from retrieval.prompt import prompt_leaks
from serving.engine import SamplingOptions
from serving.plain_prompt import PLAIN_STOP, render_plain
from serving.prompts import DEFAULT_PROMPTS, set_prompts

QUESTION = "How long does the K7 battery last on one charge?"


@pytest.fixture(scope="module")
def base_model_dir(tiny_llm, tmp_path_factory):
    """The tiny model without any chat template: a base model as the hub ships many."""
    folder = tmp_path_factory.mktemp("plain") / "tiny-base"
    shutil.copytree(tiny_llm, folder)
    for name in ("serving_chat_template.jinja", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def plain_engine(base_model_dir):
    from serving.factory import get_engine

    engine = get_engine("embedded", model=str(base_model_dir))
    yield engine
    engine.close()


def test_only_models_without_a_chat_template_get_plain_prompts(base_model_dir, tiny_llm, plain_engine, tiny_engine):
    assert resolve_llm(str(base_model_dir)).plain_prompts
    assert not resolve_llm(str(tiny_llm)).plain_prompts
    assert plain_engine.plain_prompts and not tiny_engine.plain_prompts


def test_render_plain_puts_passages_then_question_and_answer_labels():
    text = render_plain([{"role": "system", "content": "[1] a.pdf, page 2:\nThe lamp runs 8 hours."},
                         {"role": "user", "content": "How long?"}, {"role": "assistant", "content": "8 hours [1]."},
                         {"role": "user", "content": "And dimmed?"}])
    assert text == ("[1] a.pdf, page 2:\nThe lamp runs 8 hours.\n\nQuestion: How long?\nAnswer: 8 hours [1].\n\n"
                    "Question: And dimmed?\nAnswer:")


def test_rag_prompt_holds_the_passages_and_the_question_and_no_ragtune_wording(plain_engine, indexed_workspace):
    from evaluation.assistants import make_assistant

    assistant = make_assistant(indexed_workspace, plain_engine)
    prep = assistant._prepare(QUESTION, "rag", None, None, None, 2)
    text = render_plain(prep.messages)
    assert prep.plain and text.startswith("[1] ") and text.endswith(f"\n\nQuestion: {QUESTION}\nAnswer:")
    assert prompt_leaks(text, list(DEFAULT_PROMPTS.values())) == []
    assert prep.options.stop == PLAIN_STOP
    answer = assistant.answer(QUESTION, "rag", options=SamplingOptions(max_tokens=6), k=2)
    # The engine was sent exactly that text (with <bos>), not a chat template.
    assert answer.prompt_tokens == len(plain_engine.tokenizer(text)["input_ids"])
    assert [c["n"] for c in answer.citations] == [1, 2]
    base = assistant._prepare(QUESTION, "base", None, None, None, None)
    assert base.plain and render_plain(base.messages) == f"Question: {QUESTION}\nAnswer:"


def test_a_system_prompt_the_user_wrote_still_leads_a_plain_prompt(plain_engine, workspace, sample_docs):
    from evaluation.assistants import make_assistant
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths

    ingest_paths(workspace, [sample_docs / "faq.md"])
    build_index(workspace, progress=False)
    set_prompts(workspace, {"rag_system": "Reply in one short sentence."})
    prep = make_assistant(workspace, plain_engine)._prepare(QUESTION, "rag", None, None, None, 1)
    assert render_plain(prep.messages).startswith("Reply in one short sentence.\n\n[1] faq.md")


def test_chat_models_keep_their_chat_prompt(tiny_engine, indexed_workspace):
    from evaluation.assistants import make_assistant

    prep = make_assistant(indexed_workspace, tiny_engine)._prepare(QUESTION, "rag", None, None, None, 2)
    assert not prep.plain and prep.messages[0]["content"] == DEFAULT_PROMPTS["rag_system"]


def _newline_ids_token_by_token(tokenizer) -> list[int]:
    """The reading the engine did on its first plain request before: every id converted to its piece."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, piece in enumerate(pieces)
            if isinstance(piece, str) and piece.lstrip(" \u2581\u0120").startswith(("\n", "\u010a", "<0x0A>"))]


def test_the_newline_ids_are_read_once_at_load_and_match_a_token_by_token_reading(plain_engine):
    assert plain_engine.newline_ids == _newline_ids_token_by_token(plain_engine.tokenizer)
    assert len(plain_engine.newline_ids) >= 1


@pytest.mark.slow
def test_the_newline_ids_of_gemma_match_a_token_by_token_reading(gemma_llm):
    from transformers import AutoTokenizer

    from serving.plain_prompt import newline_token_ids

    tokenizer = AutoTokenizer.from_pretrained(gemma_llm)  # the tokenizer alone: no weights loaded
    found = newline_token_ids(tokenizer)
    assert found == _newline_ids_token_by_token(tokenizer)
    assert tokenizer("\n\n", add_special_tokens=False)["input_ids"][0] in found


def test_the_answer_may_not_open_with_a_new_line(plain_engine):
    newlines = plain_engine.newline_ids
    assert newlines and all(plain_engine.tokenizer.decode([i]).lstrip(" ").startswith("\n") for i in newlines)
    assert plain_engine.tokenizer("\n", add_special_tokens=False)["input_ids"][0] in newlines
    out = plain_engine.generate([{"role": "user", "content": QUESTION}], SamplingOptions(max_tokens=4), plain=True)
    assert out.completion_tokens >= 1 and not out.text.startswith("\n")


def test_an_answer_without_markers_cites_the_passage_holding_its_words_and_numbers():
    from serving.citations import citation_suffix

    passages = ["Pilot age 85, private certificate.", "Altimeter Setting: 30.27 inches Hg Temperature: 22 C"]
    assert citation_suffix("The altimeter setting was set to 30.27 inches Hg.", passages) == " [2]"
    assert citation_suffix("The altimeter setting was 29.92 inches Hg.", passages) == ""  # a number no passage has
    assert citation_suffix("Yes.", passages) == ""
    assert citation_suffix("The altimeter setting was 30.27 inches Hg [2].", passages) == ""  # cited already
    assert citation_suffix("30.27 inches Hg. The pilot was 85.", passages) == " [2][1]"


def test_an_added_citation_agrees_with_groundedness_on_a_negated_sentence():
    """A passage saying the opposite ("not suitable") holds all the sentence's words but supports nothing."""
    from evaluation.metrics import groundedness
    from serving.citations import citation_suffix

    passages = ["The tent sleeps up to 4 people.", "The tent is not suitable for heavy snow."]
    for answer, cited in [("The tent is suitable for heavy snow.", ""),
                          ("The tent is not suitable for heavy snow.", " [2]")]:
        assert citation_suffix(answer, passages) == cited
        assert groundedness(answer, passages).score == float(bool(cited))


def test_a_streamed_answer_gets_the_added_citation_as_its_last_delta(tiny_engine, indexed_workspace):
    from evaluation.assistants import make_assistant
    from serving.engine import Generation
    from serving.variants import Answer

    assistant = make_assistant(indexed_workspace, tiny_engine)
    prep = assistant._prepare(QUESTION, "rag", None, None, None, 2)
    passage = prep.citations[1]["text"]
    said = " ".join(passage.split()[:12])  # an answer made of the second passage's words
    deltas = [said[:10], said[10:], Generation(text=said, prompt_tokens=5, completion_tokens=12, ttft_s=0.1,
                                               latency_s=0.2, tokens_per_s=10.0, finish_reason="stop")]
    items = list(assistant._stream(prep, iter(deltas)))
    assert isinstance(items[-1], Answer) and items[-2] == " [2]"
    assert "".join(items[:-1]) == items[-1].text == said + " [2]"
