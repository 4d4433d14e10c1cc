"""The four assistant variants over the embedded tiny model and a real index (real embedder, FAISS, BM25)."""

from __future__ import annotations

import time

import pytest

from app.wiring.assistants import build_assistant
from ragtune.errors import BadInputError
from serving.engine import SamplingOptions
from serving.variants import Answer, parse_variant

SHORT = SamplingOptions(max_tokens=8)
CITATION_KEYS = {"n", "doc", "page", "section", "text", "score", "citation"}


@pytest.fixture
def assistant(indexed_workspace, tiny_engine):
    return build_assistant(indexed_workspace, tiny_engine)


@pytest.mark.parametrize("spec, expected", [
    ("base", ("base", None)), ("rag", ("rag", None)), ("ft", ("ft", None)), ("FT+RAG", ("ft+rag", None)),
    ("ft:my-adapter", ("ft", "my-adapter")), ("ft+rag:v2.1", ("ft+rag", "v2.1")), (" rag ", ("rag", None)),
])
def test_parse_variant(spec, expected):
    assert parse_variant(spec) == expected


@pytest.mark.parametrize("spec", ["", "gpt-4", "rag:adapter", "base:x", "ft-rag"])
def test_parse_variant_refuses_unknown_forms(spec):
    with pytest.raises(BadInputError):
        parse_variant(spec)


def test_rag_answer_cites_the_numbered_passages_it_was_given(assistant):
    answer = assistant.answer("How long does the K7 battery last on one charge?", "rag", options=SHORT)
    assert isinstance(answer, Answer) and answer.variant == "rag" and answer.adapter is None
    assert answer.citations, "a rag answer carries the passages it was shown"
    assert [c["n"] for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    assert all(set(c) == CITATION_KEYS for c in answer.citations)
    assert ("product_manual_k7.pdf", 2) in {(c["doc"], c["page"]) for c in answer.citations}
    assert any(c["citation"] == "product_manual_k7.pdf#page=2" for c in answer.citations)
    # Every citation is one of the retrieved passages; the prompt held them (many more prompt tokens than base).
    assert {c["text"] for c in answer.citations} <= {p["text"] for p in answer.passages}
    base = assistant.answer("How long does the K7 battery last on one charge?", "base", options=SHORT)
    assert base.citations == [] and base.passages == []
    assert answer.prompt_tokens > base.prompt_tokens + 100
    assert answer.latency_s >= answer.retrieval_s > 0
    assert answer.engine == "embedded" and answer.model == "tiny-llama"


def test_k_limits_the_passages(assistant):
    answer = assistant.answer("What is the maximum payload of the K7?", "rag", options=SHORT, k=2)
    assert len(answer.passages) == 2 and len(answer.citations) <= 2


def test_stream_yields_text_then_the_same_answer(assistant):
    items = list(assistant.stream("What is the maximum payload of the K7?", "rag", options=SHORT))
    final = items[-1]
    assert isinstance(final, Answer) and all(isinstance(i, str) for i in items[:-1])
    assert "".join(items[:-1]).strip() == final.text
    again = assistant.answer("What is the maximum payload of the K7?", "rag", options=SHORT)
    assert again.text == final.text and again.citations == final.citations


def test_ft_variants_serve_a_trained_adapter(assistant, tiny_fact_lora, facts, adapter_registrar, tmp_path):
    import shutil

    ws = assistant.ws
    folder = ws.path("adapters", "facts")
    shutil.copytree(tiny_fact_lora, folder, dirs_exist_ok=True)
    adapter_registrar(ws, "facts", folder, "tiny-llama")
    question, fact = facts[0]
    opts = SamplingOptions(max_tokens=24)
    tuned = assistant.answer(question, "ft:facts", options=opts)
    assert tuned.text == fact and tuned.adapter == "facts" and tuned.variant == "ft"
    assert assistant.answer(question, "ft", options=opts).adapter == "facts"  # newest adapter by default
    assert assistant.answer(question, "base", options=opts).text != fact
    both = assistant.answer(question, "ft+rag", adapter="facts", options=SHORT)
    assert both.variant == "ft+rag" and both.adapter == "facts" and both.citations


def test_retrained_adapter_is_served_without_restart(assistant, tiny_llm, lora_trainer, adapter_registrar,
                                                     facts, tmp_path):
    ws = assistant.ws
    question = facts[1][0]
    opts = SamplingOptions(max_tokens=24)
    first = lora_trainer(tiny_llm, ws.path("adapters", "swap-v1"), facts[:2], steps=30)
    adapter_registrar(ws, "swap", first, "tiny-llama")
    assert assistant.answer(question, "ft:swap", options=opts).text == facts[1][1]
    new_fact = "Wheel repairs are done by Ines Varga."
    time.sleep(0.01)  # a distinct creation time marks the new version
    second = lora_trainer(tiny_llm, ws.path("adapters", "swap-v2"), [(question, new_fact)], steps=30)
    adapter_registrar(ws, "swap", second, "tiny-llama")
    assert assistant.answer(question, "ft:swap", options=opts).text == new_fact


def test_ft_errors_are_clear(assistant, indexed_workspace, tiny_fact_lora, adapter_registrar, tmp_path):
    with pytest.raises(BadInputError, match="unknown adapter 'nope'"):
        assistant.answer("hi", "ft:nope")
    with pytest.raises(BadInputError, match="Two adapters"):
        assistant.answer("hi", "ft:a", adapter="b")
    adapter_registrar(indexed_workspace, "for-gemma", tiny_fact_lora, "gemma-3-270m")
    with pytest.raises(BadInputError, match="trained on gemma-3-270m"):
        assistant.answer("hi", "ft:for-gemma")
    with pytest.raises(BadInputError, match="empty"):
        assistant.answer("   ", "base")


def test_ft_without_any_adapter_says_to_train_one(tiny_engine, workspace):
    from serving.variants import Assistant

    with pytest.raises(BadInputError, match="has none yet"):
        Assistant(workspace, tiny_engine).answer("hi", "ft")


def test_rag_without_an_index_says_how_to_build_one(tiny_engine, workspace):
    assistant = build_assistant(workspace, tiny_engine)
    with pytest.raises(BadInputError, match="ragtune index"):
        assistant.answer("hi", "rag")
    assert assistant.answer("hi", "base", options=SHORT).text  # base needs no index


def test_workspace_prompt_overrides_reach_the_model(tiny_engine, workspace):
    from serving.prompts import get_prompts, reset_prompts, set_prompts
    from serving.variants import Assistant

    assistant = Assistant(workspace, tiny_engine)
    plain = assistant.answer("What is the K7?", "base", options=SHORT)
    system = "You are the Lumora Robotics support desk. Answer in one short sentence."
    assert set_prompts(workspace, {"base_system": system})["base_system"] == system
    prompted = assistant.answer("What is the K7?", "base", options=SHORT)
    assert prompted.prompt_tokens >= plain.prompt_tokens + tiny_engine.count_tokens(system)
    with pytest.raises(BadInputError, match="Unknown prompt"):
        set_prompts(workspace, {"nonsense": "x"})
    reset_prompts(workspace)
    assert get_prompts(workspace)["base_system"] == ""
    assert assistant.answer("What is the K7?", "base", options=SHORT).prompt_tokens == plain.prompt_tokens


def test_history_is_part_of_the_prompt(tiny_engine, workspace):
    from serving.variants import Assistant

    assistant = Assistant(workspace, tiny_engine)
    alone = assistant.answer("And the payload?", "base", options=SHORT)
    history = [{"role": "user", "content": "Tell me about the K7."}, {"role": "assistant", "content": "It is a robot."}]
    followup = assistant.answer("And the payload?", "base", history=history, options=SHORT)
    assert followup.prompt_tokens > alone.prompt_tokens
    with pytest.raises(BadInputError, match="History turn 1"):
        assistant.answer("x", "base", history=[{"role": "robot", "content": "x"}])


def test_the_workspace_retriever_and_the_rag_prompt_fit_the_protocols_the_assistant_declares(indexed_workspace):
    """retrieval never imports serving: its Retriever and prompt builder fit serving.components by shape."""
    from retrieval.prompt import build_rag_messages
    from retrieval.search import Retriever as IndexRetriever
    from serving import components

    retriever = IndexRetriever.for_workspace(indexed_workspace)
    assert isinstance(retriever, components.Retriever)
    found = retriever.retrieve("What is the payload of the K7?", k=2)
    messages, used = build_rag_messages("What is the payload of the K7?", found, count_tokens=len,
                                        max_context_tokens=4000, example=retriever.worked_example(found))
    assert used and all(p.citation and p.chunk_id for p in used) and messages[-1]["role"] == "user"


def test_a_rebuilt_index_answers_the_next_question_of_the_same_assistant(tiny_engine, workspace, tmp_path):
    from retrieval.index import build_index
    from retrieval.ingest import ingest_paths

    (tmp_path / "k7.md").write_text("# K7\n\nThe K7 robot carries a payload of 1,450 kg.\n")
    (tmp_path / "k9.md").write_text("# K9\n\nThe K9 drone flies for 55 minutes on one charge.\n")
    ingest_paths(workspace, [tmp_path / "k7.md"])
    build_index(workspace, progress=False)
    assistant = build_assistant(workspace, tiny_engine)
    before = assistant.retriever.version
    assert {c["doc"] for c in assistant.answer("How long does the K9 fly?", "rag", options=SHORT).citations} \
        == {"k7.md"}
    ingest_paths(workspace, [tmp_path / "k9.md"])
    build_index(workspace, progress=False)
    assert assistant.retriever.version != before
    answer = assistant.answer("How long does the K9 fly?", "rag", options=SHORT, k=1)
    assert [c["doc"] for c in answer.citations] == ["k9.md"]
