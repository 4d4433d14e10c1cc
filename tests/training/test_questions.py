"""Rule-written questions: worded the way a person asks, or not written at all."""

from __future__ import annotations

import re

import pytest

from training.questions import wh_question
from training.teachers import (ChunkView, ExtractiveTeacher, find_value_spans, is_noun_phrase, question_defect,
                               without_lead_in)


def ask(sentence: str, nth: int = 0) -> str | None:
    return wh_question(sentence, *find_value_spans(sentence)[nth])


@pytest.mark.parametrize("sentence, question", [
    # do-support
    ("Full-time employees get 27 vacation days per year, on top of public holidays.",
     "How many vacation days do full-time employees get per year?"),
    ("One Lumora Orbit installation manages up to 120 robots per site.",
     "How many robots does one Lumora Orbit installation manage per site?"),
    ("In 2024 the new path planner reduced the average travel time by 12 percent.", None),
    ("The new path planner reduced the average travel time per transport order by 12 percent.",
     "By what percentage did the new path planner reduce the average travel time per transport order?"),
    # auxiliary inversion, fronted preposition, "of" phrase kept with the value
    ("A lost or stolen badge must be reported to the security desk within 2 hours of noticing the loss.",
     "Within how many hours must a lost or stolen badge be reported to the security desk?"),
    ("Every new parent gets 18 weeks of fully paid parental leave.",
     "How many weeks of fully paid parental leave does every new parent get?"),
    # "X has a Y of Z" and an introductory clause moved to the end
    ("The traction battery pack has a separate battery warranty of 5 years.",
     "How many years is the separate battery warranty that the traction battery pack has?"),
    ("After 6 failed sign-in attempts, the account is locked for 20 minutes.",
     "For how many minutes is the account locked after 6 failed sign-in attempts?"),
    ("Client entertainment is limited to EUR 80 per guest, including drinks.",
     "How much is client entertainment limited to?"),
])
def test_natural_questions(sentence, question):
    assert ask(sentence) == question


@pytest.mark.parametrize("sentence", [
    "Submit your travel expense claim in the Spendly app no later than 30 days after you return.",  # imperative
    "Upgrading from 4.x requires a map re-validation, which takes around 20 minutes per site.",  # relative clause
    "LUMORA ROBOTICS - WARRANTY AND SUPPORT TERMS Document WS-2025-01, valid from 1 January 2025",  # heading
    "Core hours are 10:00 to 15:00 from Monday to Thursday.",  # the second value of a range
])
def test_no_question_where_the_rules_do_not_fit(sentence):
    spans = find_value_spans(sentence)
    nth = 1 if sentence.startswith("Core hours") else 0
    assert wh_question(sentence, *spans[nth]) is None


def test_extractive_teacher_asks_the_natural_question_first():
    chunk = ChunkView("c1", "employee_handbook.md", "## Vacation\n\nFull-time employees get 27 vacation days per "
                      "year, on top of public holidays. The company was founded in 2016 by two engineers.\n")
    facts = ExtractiveTeacher().facts(chunk, questions_per_fact=3, max_facts=6)
    vacation = next(f for f in facts if "27" in f.answer)
    assert vacation.questions[0] == "How many vacation days do full-time employees get per year?"
    founded = next(f for f in facts if "2016" in f.answer)
    assert founded.questions[0] == "In what year was the company founded by two engineers?"
    assert "What was the company?" not in founded.questions  # a passive is not a definition


def test_ranges_codes_records_and_durations():
    assert ask("Core hours are 10:00 to 15:00 from Monday to Thursday.") == "What are core hours from Monday to Thursday?"
    assert ask("Through our finance partner, Quayline Capital, you can lease a K7 from EUR 1,150 per month.") == (
        "From how much can you lease a K7 through our finance partner?")
    assert find_value_spans("Security Operations Desk, staffed 24/7: internal extension 4411")[0][:2] == (59, 63)
    teacher = ExtractiveTeacher()
    errors = teacher.facts(ChunkView("c", "manual.pdf", "E-509 Emergency stop button pressed.\n"), 3, 6)
    assert "What does E-509 mean?" in errors[0].questions
    table = "part_number: LR-K7-2031; name: Drive wheel assembly; price_eur: 412.00; stock_lead_time_days: 5"
    record = teacher.facts(ChunkView("c", "parts.csv", table), 3, 6)[0]
    assert record.questions[0] == "What is the part number of the drive wheel assembly?"
    assert "What is the price in EUR of the drive wheel assembly (LR-K7-2031)?" in record.questions
    vacation = teacher.facts(ChunkView("c", "handbook.md", "The probation period for new employees is 3 months.\n"), 3, 6)
    assert vacation[0].questions[:2] == ["How many months is the probation period for new employees?",
                                         "How long is the probation period for new employees?"]


def test_questions_a_person_would_not_ask_are_refused_with_the_reason():
    """Rows seen on a quarterly-report corpus and on nih-protocols (bench/results/synth_junk_nih.json)."""
    junk = {
        "Total how much $ 5,931 $ 12,189 206 % $ 38,819?": "a cloze over a run of numbers",
        "A factual report that may be admissible under 49 U.S.C. § how many(b) is available here?":
            "the value is part of a name, an address or a code",
        "Location: The Queen Elizabeth National Spinal Injuries Unit, how many Govan Road, Glasgow, G51 4TF?":
            "the value is part of a name, an address or a code",
        "After treatment, oral cGVHD score and systemic cGVHD score were performed every how many?": "nothing to count",
        "It was reported that the last communication occurred around how many?": "nothing to count",
        "The airplane was reported to have a how many horsepower engine?": "a wh-phrase after an article",
        "Approximately one year prior to the accident, in a different which code?": "no code to ask for",
        "What percentage is the percentage of people with active hepatitis C?": "asks for the word it names",
        "This assessment will be used in subjects between how many and 18 years of age?":
            "one end of a range or a list",
        "How many cycles do Otherwise triple drug maintenance therapy is continued for a total of?":
            "two sentences or a list run together",
        "‘Virtual Reality for Mobility in Spinal Cord Injury: A Review’, Innovations in Neuroscience, how many, pp?":
            "a reference entry",
    }
    for question, reason in junk.items():
        assert question_defect(question) == reason, question
    for question in ("How many vacation days do full-time employees get per year?",
                     "Within how many days must the IRB be notified of study completion?",
                     "Train each muscle group once a day, how many days a week, for a total of 3 weeks?",
                     "What does E-214 mean?", "What was total revenue in the third quarter of 2023?"):
        assert question_defect(question) is None, question


def test_a_heading_or_bullet_run_into_a_sentence_is_not_part_of_its_question():
    chunk = ChunkView(chunk_id="c", doc="r.pdf", page=1, section="Analysis", text="")
    assert without_lead_in("Analysis While conducting an approach, the pilot descended to 1,200 feet.", chunk) == \
        "While conducting an approach, the pilot descended to 1,200 feet."
    assert without_lead_in("Schedule of activities The duration of the project will be 18 months.", chunk) == \
        "The duration of the project will be 18 months."
    assert without_lead_in("• Patients must be 18 years or older.", chunk) == "Patients must be 18 years or older."
    assert without_lead_in("The pilot held a private certificate.", chunk) == "The pilot held a private certificate."


def test_no_question_is_made_from_a_table_row_a_cut_clause_or_the_documents_own_name():
    """Held-out rows (contoso-benefits, ntsb-reports; bench/results/synth_junk_heldout.json): a table row read
    as a sentence, a subject taken up to a later verb ("What is stated about the Northwind Standard plan does not
    cover the?"), a topic that is the document itself, "What is X?" where the sentence does not say what X is."""
    teacher = ExtractiveTeacher(seed=0)
    text = ("Net sales by category were as follows.\n"
            "Total $ 5,931 $ 12,189 206 % $ 38,819\n"
            "The Northwind Standard plan does not cover the cost of allergy testing or treatment for cosmetic purposes.\n"
            "You can also contact Northwind Health if you have any questions about the prior authorization process.\n"
            "Northwind Standard will cover the cost of foot surgery, so you do not have to worry about the burden.\n"
            "The investigation is under the jurisdiction of the Organization of Eastern Caribbean States.\n"
            "The appointment is medically necessary and is covered by the plan.\n"
            "The Northwind Standard plan is a contract between the employee and Northwind Health.\n")
    facts = teacher.facts(ChunkView("c", "Northwind_Standard_Benefits_Details.pdf", text, 3, None), 3, 10)
    questions = [q for f in facts for q in f.questions]
    assert "What is the Northwind Standard plan?" in questions  # the sentence says what it is
    for q in questions:
        assert not re.search(r"\d.*\d", q), q  # no cloze over the table row's numbers
        assert not re.search(r"(?:the|if you|cover the)\?$", q), q  # no subject cut mid-clause
        assert not q.endswith("about Northwind Standard?"), q  # the document's own name is no topic
        assert q not in ("What is the investigation?", "What is the appointment?"), q


def test_a_subject_is_a_noun_phrase_not_a_cut_clause():
    for subject in ("the Northwind Standard plan does not cover the", "Ask Northwind Health Plus if you",
                    "We want to make sure our employees", "the portion of the",
                    "the Northwind Standard plan covers therapeutic injections when they"):
        assert not is_noun_phrase(subject), subject
    for subject in ("the Manager of Operations", "Out-of-network acupuncture services", "the study population"):
        assert is_noun_phrase(subject), subject


def test_one_end_of_a_range_or_an_open_bound_is_not_asked():
    assert question_defect("From how much may copays for diagnostic testing range to $100 depending on the test?") \
        == "one end of a range or a list"
    assert question_defect("How many+ years of experience in operations management?") == "one end of a range or a list"
    assert question_defect("How much do copays for diagnostic testing cost?") is None
