"""Every metric against values worked out by hand."""

import pytest

from evaluation import metrics as M


def test_normalisation_and_exact_match():
    assert M.normalize_answer("The  K7's top speed: 2.3 m/s!") == "k7s top speed 23 ms"
    assert M.exact_match("The warranty is 24 months.", "warranty is 24 months") == 1.0
    assert M.exact_match("24 months", "The warranty is 24 months.") == 0.0


def test_token_f1_hand_computed():
    # prediction tokens: warranty lasts 24 months (4); reference: standard warranty is 24 months (5)
    # common = warranty, 24, months = 3 -> P = 3/4, R = 3/5, F1 = 2PR/(P+R) = 0.6667
    assert M.token_f1("The warranty lasts 24 months.", "The standard warranty is 24 months.") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert M.token_f1("nothing shared", "different words") == 0.0
    assert M.token_f1("", "") == 1.0
    assert M.token_f1("", "something") == 0.0
    # repeated tokens count once per occurrence (Counter intersection): "a a b" vs "a b b" -> common 2 of 3
    assert M.token_f1("x x y", "x y y") == pytest.approx(2 / 3)


PASSAGES = [
    "The TrailMaster X4 Tent is designed for 3-season use. It sleeps up to 4 people and weighs 3.5 kg.",
    "The tent comes with a 2-year limited warranty against manufacturing defects. It is not suitable for heavy snow.",
]


def test_fact_hit_needs_every_value_of_the_reference():
    reference = "The K7 drive wheels must be replaced every 3,000 operating hours (part LR-K7-2031)."
    assert M.key_values(reference) == {"3000", "LR-K7-2031"}  # the 7 of "K7" is a name, not a value
    assert M.fact_hit("Replace them after 3000 hours; order LR-K7-2031.", reference) == 1.0
    assert M.fact_hit("Replace the K7 wheels every 3,000 hours.", reference) == 0.0  # the part number is missing
    assert M.fact_hit("The K7 wheels must be replaced every 2,000 operating hours (LR-K7-2031).", reference) == 0.0
    assert M.fact_hit("anything", "Passwords must be long.") is None  # no value to check: left out of the mean
    assert M.fact_hit("The lamp runs for 8 hours [1].", "It runs 1 hour.") == 0.0  # a citation marker is no value


def test_groundedness_copied_answer_is_fully_supported():
    g = M.groundedness("The TrailMaster X4 Tent is designed for 3-season use. It comes with a 2-year limited warranty.",
                       PASSAGES)
    assert g.score == 1.0
    assert [c.reason for c in g.claims] == ["supported", "supported"]


def test_groundedness_contradicting_numbers_and_negation_fail():
    g = M.groundedness("The tent sleeps up to 6 people. The tent is suitable for heavy snow.", PASSAGES)
    assert g.score == 0.0
    assert [c.reason for c in g.claims] == ["number mismatch", "negation mismatch"]


def test_groundedness_partial_and_unsupported():
    # one claim copied, one invented with no support: 1 of 2
    g = M.groundedness("It sleeps up to 4 people. The tent includes a solar charger and a coffee maker.", PASSAGES)
    assert g.score == 0.5
    assert g.claims[1].reason == "not covered"


def test_groundedness_not_applicable():
    assert M.groundedness("Anything.", []).score is None
    assert M.groundedness("", PASSAGES).score is None


def test_context_recall_hand_computed():
    # reference content words: warranty, 2, year, limited -> all 4 in passage 2 (year via plural/singular stem)
    assert M.context_recall("A 2-year limited warranty.", PASSAGES) == 1.0
    # content words: tent, weigh, 5, kg -> "weighs" -> "weigh", present; "5" absent (passage says 3.5): 3/4
    assert M.context_recall("The tent weighs 5 kg.", PASSAGES) == pytest.approx(3 / 4)
    assert M.context_recall("Anything at all", None) is None


def test_hit_at_k_and_citation_accuracy():
    passages = [{"doc": "a.md", "page": None}, {"doc": "docs/manual.pdf", "page": 3}, {"doc": "manual.pdf", "page": 4}]
    assert M.hit_at_k(passages, "manual.pdf", 4) == 1.0
    assert M.hit_at_k(passages, "manual.pdf", 4, k=2) == 0.0  # page 4 is third
    assert M.hit_at_k(passages, "manual.pdf", None, k=2) == 1.0  # no gold page: the file is enough
    assert M.hit_at_k(passages, "other.md") == 0.0
    assert M.hit_at_k(passages, None) is None
    # 1 of 3 citations is the gold source
    assert M.citation_accuracy(passages, "manual.pdf", 3) == pytest.approx(1 / 3)
    assert M.citation_accuracy([], "manual.pdf", 3) is None


def test_cited_sources_follow_markers_or_first_shown():
    citations = [{"n": 1, "doc": "a.md"}, {"n": 2, "doc": "b.md"}, {"n": 3, "doc": "c.md"}]
    assert M.cited_sources("Per [2] and [3], yes.", citations) == (citations[1:], True)
    assert M.cited_sources("Yes.", citations) == (citations[:1], False)
    assert M.cited_sources("See [9].", citations) == (citations[:1], False)  # a marker naming no passage


def test_refusals():
    for text in ("I don't know.", "The documents do not mention the price.", "I'm not sure about that.",
                 "There is no information about it in the passages.", ""):
        assert M.is_refusal(text) == 1.0, text
    for text in ("The warranty is 24 months.", "No, the tent is not waterproof."):
        assert M.is_refusal(text) == 0.0, text


def test_answer_metrics_speed_and_applicability():
    answer = {"text": "It sleeps up to 4 people [1].", "passages": [{"doc": "tent.md", "text": PASSAGES[0]}],
              "citations": [{"n": 1, "doc": "tent.md"}], "prompt_tokens": 100, "completion_tokens": 20,
              "ttft_s": 0.5, "latency_s": 2.0}
    item = {"question": "How many people?", "answer": "Up to 4 people.", "doc": "tent.md"}
    m = M.answer_metrics(answer, item, uses_passages=True)
    assert m["e2e_tokens_per_s"] == 10.0  # 20 tokens over the 2 s of the whole answer
    assert m["decode_tokens_per_s"] == pytest.approx(19 / 1.5)  # the 19 after the first, over the 1.5 s after it
    assert m["groundedness"] == 1.0 and m["hit_at_k"] == 1.0 and m["citation_accuracy"] == 1.0
    # the [1] marker is dropped and the question's words ("how many people") too: "it sleeps up to 4" (5)
    # vs "up to 4" (3), 3 shared -> P = 3/5, R = 1, F1 = 0.75
    assert m["token_f1"] == pytest.approx(0.75)
    assert m["echo_rate"] == 0.0 and m["loop_rate"] == 0.0 and m["claim_recall"] == 1.0
    base = M.answer_metrics(answer, item, uses_passages=False)
    assert "groundedness" not in base and "hit_at_k" not in base


def test_semantic_similarity_orders_paraphrase_above_unrelated():
    sims = M.semantic_similarities(
        ["The warranty lasts 24 months.", "The warranty lasts 24 months.", "Bananas are yellow fruit."],
        ["The warranty lasts 24 months.", "Coverage is two years long.", "The warranty lasts 24 months."])
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] > sims[2]
    assert all(0.0 <= s <= 1.0 for s in sims)


QUESTION = "How long does the K7 battery last on a full charge?"
REFERENCE = "The K7 battery lasts about 8 hours on a full charge."
ECHO = "The K7 battery lasts on a full charge."
CORRECT = "About 8 hours."


def test_an_echo_of_the_question_no_longer_outscores_a_correct_answer():
    """Plain SQuAD F1 and plain embedding similarity rank the echo above the right answer; scored on what
    the question did not say, the right answer ranks first and the echo earns nothing."""
    # Before: the echo shares k7 battery lasts on full charge (6 of its 6) with the reference's 9 words:
    # P 1, R 6/9, F1 0.8; the right answer shares about 8 hours: P 1, R 3/9, F1 0.5.
    assert M.token_f1(ECHO, REFERENCE) > M.token_f1(CORRECT, REFERENCE)
    plain = M.semantic_similarities([ECHO, CORRECT], [REFERENCE, REFERENCE])
    assert plain[0] > plain[1]
    # After: the reference beyond the question is "about 8 hours".
    assert M.token_f1(CORRECT, REFERENCE, QUESTION) == 1.0
    assert M.token_f1(ECHO, REFERENCE, QUESTION) == 0.0
    echo_sim, correct_sim = M.semantic_similarities([ECHO, CORRECT], [REFERENCE, REFERENCE],
                                                    questions=[QUESTION, QUESTION])
    assert correct_sim > 0.9 and echo_sim == 0.0
    assert M.claim_recall(CORRECT, REFERENCE, QUESTION) == 1.0 and M.claim_recall(ECHO, REFERENCE, QUESTION) == 0.0
    m_echo = M.answer_metrics({"text": ECHO}, {"question": QUESTION, "answer": REFERENCE}, uses_passages=False)
    m_right = M.answer_metrics({"text": CORRECT}, {"question": QUESTION, "answer": REFERENCE}, uses_passages=False)
    assert m_right["token_f1"] > m_echo["token_f1"] and m_echo["echo_rate"] == 1.0 and m_right["echo_rate"] == 0.0


def test_a_value_the_question_names_is_no_fact_of_the_answer():
    question = "What does error E-214 mean on the K7?"
    reference = "E-214 means a drive wheel is blocked."
    assert M.fact_hit("Error E-214 on the K7 is an error.", reference) == 1.0  # plain: credited for copying
    assert M.fact_hit("Error E-214 on the K7 is an error.", reference, question) is None
    assert M.fact_hit("It says 30 s.", "Wait 30 s after E-214.", question) == 1.0


def test_a_reference_made_of_the_questions_words_is_compared_whole():
    # Nothing beyond the question to look for: plain F1 on the whole texts.
    assert M.token_f1("The K7 is waterproof.", "K7 is waterproof", "Is the K7 waterproof?") == 1.0


def test_claim_recall_counts_the_reference_sentences_the_answer_states():
    reference = "The dock is CD-40. It charges the K7 in 2 hours. Charging stops at 45 degrees."
    question = "Where does the K7 charge?"
    answer = "At dock CD-40, which charges it in 2 hours."
    # dock CD-40: stated; "charges ... in 2 hours": stated; "stops at 45 degrees": not stated -> 2/3
    assert M.claim_recall(answer, reference, question) == pytest.approx(2 / 3)
    assert M.claim_recall(answer, "It charges in 3 hours.", question) == 0.0  # a wrong number is not stated
    assert M.claim_recall(answer, "Where does the K7 charge?", question) is None  # nothing beyond the question


def test_echo_and_loop_detection():
    assert M.is_echo("The K7 battery lasts on a full charge for long.", QUESTION) == 1.0
    assert M.is_echo("The battery lasts 8 hours, then the K7 returns to dock CD-40 to recharge.", QUESTION) == 0.0
    assert M.is_echo("Yes.", "Is the K7 waterproof?") == 0.0  # adds a word, repeats none
    assert M.is_echo("", QUESTION) is None
    assert M.is_loop("It lasts 8 hours and it lasts 8 hours and it lasts 8 hours and") == 1.0
    assert M.is_loop("no no no no") == 1.0
    assert M.is_loop("Press the power button, wait for the light, then press the power button again.") == 0.0
    assert M.is_loop("") is None


def test_a_sentence_with_a_value_is_stated_by_its_value_in_other_words():
    question = "How experienced was the pilot who crashed near Latrobe, in flying hours?"
    reference = "The pilot reported a total flight experience of 1,150 hours."
    assert M.claim_recall("He had flown 1150 hours.", reference, question) == 1.0
    assert M.claim_recall("He had flown 1,510 hours.", reference, question) == 0.0
