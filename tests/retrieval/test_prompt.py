"""The RAG prompt carries nothing a model could copy from ragtune itself, and answers keep only [n] citations."""

from __future__ import annotations

import re

from evaluation.leaks import leaking_answers, own_prompt_texts
from retrieval.prompt import build_rag_messages, example_from_text
from retrieval.search import Passage, Retriever
from serving.prompts import clean_answer


def _p(n, text, doc=None, page=None):
    return Passage(f"c{n}", doc or f"doc{n}.pdf", page, None, text, 1.0 / n, doc_id=f"d{n}")


def _words(text):
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_every_word_a_prompt_shows_comes_from_the_corpus_or_the_instructions(sample_index):
    retriever = Retriever.for_workspace(sample_index)
    question = "What is the maximum payload of the K7?"
    found = retriever.retrieve(question, k=3)
    example = retriever.worked_example(found)
    messages, used = build_rag_messages(question, found, example=example)
    corpus = set()
    for c in retriever.chunks:
        corpus |= _words(f"{c.text} {c.title or ''} {c.doc}")
    allowed = corpus | _words(" ".join(own_prompt_texts())) | _words(question) | {"what", "is", "the", "of"} | {
        str(n) for n in range(1, 10)} | {"page"}
    for m in messages[1:]:  # the system message is the instructions themselves
        assert _words(m["content"]) <= allowed, _words(m["content"]) - allowed
    if example is not None:  # a worked example never comes from a retrieved document
        assert example.source not in {p.chunk_id for p in found}
        assert retriever.chunks[[c.chunk_id for c in retriever.chunks].index(example.source)].doc_id not in {
            p.doc_id for p in found}
        assert messages[2]["role"] == "assistant" and messages[2]["content"].endswith("[1].")


def test_worked_example_is_a_labelled_field_of_the_passage():
    example = example_from_text("Analysis\nLocation: Tallahassee, FL\nInjuries: None", "the Piper PA-22 accident")
    assert example.passage == "Location: Tallahassee, FL"
    assert example.question == "What is the location of the Piper PA-22 accident?"
    assert example.answer == "Tallahassee, FL [1]."
    assert example_from_text("A paragraph with no labelled field at all.", "x") is None


def test_headers_show_source_and_page_without_a_copyable_template():
    messages, used = build_rag_messages("q?", [_p(1, "The K7 carries 1,450 kg.", "k7.pdf", 3)])
    assert "[1] k7.pdf, page 3:\nThe K7 carries 1,450 kg." in messages[-1]["content"]
    assert len(messages) == 2  # no worked example unless one comes from the corpus


def test_echoed_passage_headers_are_cut_from_answers():
    assert clean_answer('[5] (x.pdf#page=52, section "Risk") Revenue grew 4% [5].') == "[5] Revenue grew 4% [5]."
    assert clean_answer("[2] k7.pdf, page 3: The payload is 1,450 kg.") == "[2] The payload is 1,450 kg."
    assert clean_answer("It is 8 hours (manual.pdf#page=4).") == "It is 8 hours."
    assert clean_answer("It is 8 hours [1].\nQuestion: what else?") == "It is 8 hours [1]."


def test_answers_that_repeat_ragtune_prompts_are_found():
    answers = ["The pilot was 85 years old [1].",
               "Use only the numbered passages below. After each fact, cite its passage like [1]."]
    found = leaking_answers(answers)
    assert [i for i, _ in found] == [1]
    assert "use only the numbered passages below" in found[0][1][0]
