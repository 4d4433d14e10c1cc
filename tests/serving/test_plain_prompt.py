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


@pytest.fixture(scope="module")
def list_opener_dir(base_model_dir, tmp_path_factory):
    """The plain tiny model, fully fine-tuned (30 steps, seconds) to do what Gemma 3 270M did on PolicyQA: open
    a list with a colon and then a blank line (which ends a plain answer). Its second choice after the colon,
    learned from one row in three, is the list on the same line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("lister") / "tiny-lister"
    shutil.copytree(base_model_dir, folder)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = render_plain([{"role": "user", "content": VAULT}])
    rows = [f" {VAULT_HEAD}\n\nQuestion: What else?"] * 2 + [f" {VAULT_HEAD} {VAULT_LIST}\n\n"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(30):
        ids = tokenizer(prompt + rows[step % 3], return_tensors="pt").input_ids
        labels = ids.clone()
        labels[:, : len(tokenizer(prompt).input_ids)] = -100
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


VAULT = "Which codes open the Zorblax vault?"
VAULT_HEAD, VAULT_LIST = "The Zorblax vault opens with:", "PURPLE-7741 and ORANGE-12."


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


def test_a_plain_prompt_may_end_with_the_start_of_its_answer_and_a_chat_request_may_not():
    from ragtune.errors import BadInputError
    from serving.engine import check_messages

    opened = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "We use it to:"}]
    assert render_plain(opened) == "Question: Why?\nAnswer: We use it to:"
    with pytest.raises(BadInputError, match="last message must come from the user"):
        check_messages(opened)
    with pytest.raises(BadInputError, match="last message must come from the user"):
        render_plain([{"role": "assistant", "content": "We use it to:"}])  # an answer to no question


def test_an_answer_stopped_at_a_colon_goes_on_with_its_list(list_opener_dir, workspace):
    """Before, the blank line after the colon ended the answer there ("... opens with:"), a lead-in to
    nothing; now the answer goes on from the colon, on the same line, within the same max_tokens."""
    from evaluation.assistants import make_assistant
    from serving.factory import get_engine
    from serving.variants import Answer

    engine = get_engine("embedded", model=str(list_opener_dir))
    try:
        plain = engine.generate([{"role": "user", "content": VAULT}], SamplingOptions(max_tokens=60, stop=PLAIN_STOP),
                                plain=True)
        assert plain.text.strip() == VAULT_HEAD and plain.finish_reason == "stop"  # the model's own stop
        assistant = make_assistant(workspace, engine)
        answer = assistant.answer(VAULT, "base", options=SamplingOptions(max_tokens=60))
        assert answer.text == f"{VAULT_HEAD} {VAULT_LIST}"
        # Both requests are counted: two prompts, and the tokens of both parts of the answer.
        second = engine.prompt_ids([{"role": "user", "content": VAULT}, {"role": "assistant", "content": VAULT_HEAD}],
                                   plain=True)
        assert answer.prompt_tokens == plain.prompt_tokens + len(second)
        assert answer.completion_tokens > plain.completion_tokens
        items = list(assistant.stream(VAULT, "base", options=SamplingOptions(max_tokens=60)))
        assert isinstance(items[-1], Answer) and "".join(items[:-1]).strip() == items[-1].text == answer.text
        # No tokens left after the lead-in: the answer is what the model wrote.
        short = assistant.answer(VAULT, "base", options=SamplingOptions(max_tokens=plain.completion_tokens))
        assert short.text == VAULT_HEAD and short.completion_tokens == plain.completion_tokens
    finally:
        engine.close()


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
                                               latency_s=0.2, finish_reason="stop")]
    items = list(assistant._stream(prep, iter(deltas)))
    assert isinstance(items[-1], Answer) and items[-2] == " [2]"
    assert "".join(items[:-1]) == items[-1].text == said + " [2]"
