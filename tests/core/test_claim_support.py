"""The one lexical support check behind groundedness (evaluation) and added citations (serving)."""

from ragtune.claim_support import check_claim

PASSAGES = [
    "Pilot age 85, private certificate.",
    "Altimeter Setting: 30.27 inches Hg Temperature: 22 C",
    "The altimeter setting was not recorded.",
]


def test_check_claim_names_the_passage_that_supports_the_claim():
    check = check_claim("The altimeter setting was 30.27 inches Hg.", PASSAGES)
    assert (check.supported, check.reason, check.passage) == (True, "supported", 1)
    assert check.evidence == "Altimeter Setting: 30.27 inches Hg Temperature: 22 C"


def test_check_claim_names_the_best_passage_also_when_it_fails_and_the_first_on_a_tie():
    wrong_number = check_claim("The altimeter setting was 29.92 inches Hg.", PASSAGES)
    assert (wrong_number.supported, wrong_number.reason, wrong_number.passage) == (False, "number mismatch", 1)
    tie = check_claim("The pilot was 85.", [PASSAGES[0], PASSAGES[0]])
    assert tie.passage == 0


def test_a_claim_without_content_words_points_at_no_passage():
    check = check_claim("It was.", PASSAGES)
    assert (check.supported, check.reason, check.passage) == (True, "no content words", None)
