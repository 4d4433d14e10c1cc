"""Teachers: who writes the question/answer pairs for a chunk of a document.

- ``ExtractiveTeacher`` (here): always available, deterministic, no model. Picks fact-bearing sentences
  and turns each into a few differently worded questions; the answer quotes the sentence.
  The CPU default, because a 270M base model writes poor questions.
- ``ChatTeacher`` and ``openai_teacher`` (``training.chat_teachers``): any chat model, prompted in the
  RAFT style, locally or over an OpenAI-compatible endpoint.

Every teacher answers ``facts(chunk, questions_per_fact, max_facts)`` (the ``Teacher`` protocol).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Protocol

from ragtune.errors import BadInputError

from .questions import how_long, wh_question


@dataclass
class Fact:
    """One fact of a chunk with the questions that ask for it."""
    questions: list[str]
    answer: str
    quote: str  # the passage text that supports the answer
    fact_id: int = 0


@dataclass
class ChunkView:
    """What a teacher needs from a retrieval chunk (a dataclass or a dict with these keys)."""
    chunk_id: str
    doc: str
    text: str
    page: int | None = None
    section: str | None = None

    @classmethod
    def of(cls, chunk) -> "ChunkView":
        get = chunk.get if isinstance(chunk, dict) else (lambda k, d=None: getattr(chunk, k, d))
        text, chunk_id = get("text"), get("chunk_id")
        if not isinstance(text, str) or not chunk_id:
            raise BadInputError(f"A chunk needs 'chunk_id' and 'text'; got {type(chunk).__name__} without them.")
        return cls(str(chunk_id), str(get("doc") or get("doc_id") or "document"), text, get("page"), get("section"))


class Teacher(Protocol):
    name: str

    def facts(self, chunk: ChunkView, questions_per_fact: int, max_facts: int) -> list[Fact]: ...


# ---------------------------------------------------------------- extractive

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_UNIT_WH = [
    (r"kg|kilograms?|tonnes?|t\b", "how many kilograms" ),
    (r"m/s|km/h|mph", "what speed"),
    (r"hours?|h\b", "how many hours"),
    (r"minutes?|min\b", "how many minutes"),
    (r"seconds?|s\b", "how many seconds"),
    (r"days?|working days", "how many days"),
    (r"weeks?", "how many weeks"),
    (r"months?", "how many months"),
    (r"years?", "how many years"),
    (r"percent|%", "what percentage"),
    (r"°C|°F|degrees (?:Celsius|Fahrenheit)", "what temperature"),
    (r"degrees?", "how many degrees"),
    (r"mm|cm|metres?|meters?|m\b|km", "what distance"),
    (r"characters?", "how many characters"),
    (r"kWh|Ah|V|W|kW|GHz|dBm", "what value"),
]
_NUM = r"\d[\d,]*(?:\.\d+)?"
_SPAN_PATTERNS: list[tuple[str, str]] = [
    (rf"(?:EUR|USD|GBP|\$|€|£)\s?{_NUM}(?:\s(?:per|a)\s\w+)?|{_NUM}\s?(?:EUR|USD|GBP|euros?|dollars?)", "how much"),
    (rf"\b\d{{1,2}}\s(?:{_MONTHS})(?:\s\d{{4}})?\b|\b(?:{_MONTHS})\s\d{{1,2}},?\s\d{{4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b", "what date"),
    (r"\b\d{1,2}:\d{2}\b", "what time"),
    (r"\b[A-Z]{1,5}-[A-Z0-9]*\d[A-Z0-9-]*\b", "which code"),
    (rf"{_NUM}\s?(?:{'|'.join(p for p, _ in _UNIT_WH)})", "unit"),
    (r"\b(?:19|20)\d{2}\b", "what year"),
    (rf"\b{_NUM}\b", "how many"),
]
_COPULA = r"is|are|was|were|has|have|must|can|may|will|should|gets?|receives?|takes?|costs?|lasts?|needs?|comes?"
_SKIP_LINE = re.compile(r"^\s*(?:[|=*_#-]{3,}\s*$|\|)")  # rules, underlines, table rows
# Table-of-contents entries ("3.2 Dosing ........ 14", "11.3 Informed Consent Process 29"), page numbers
# ("12", "Page 3 of 40", "- 7 -"): navigation, not facts.
_TOC_LINE = re.compile(r"\.{5,}|…{2,}|(?:\s\.){4,}|^\d+(?:\.\d+)*\.?\s+[A-Z][^.!?]{2,80}?\s\d{1,3}$")
_PAGE_LINE = re.compile(r"^\W*(?:page\s*)?\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?\W*$", re.I)
_CONTENTS = re.compile(r"(?i)\b(?:table of contents|contents|index|list of (?:tables|figures|abbreviations))\b")
_REFERENCES = re.compile(r"(?i)\b(?:references?|bibliography|literature cited|works cited)\s*$")
# A reference entry: author lists ("Akan S, Kocaderelli I,"), "et al." with a year, journal volume/pages, DOIs.
_REFERENCE_ENTRY = re.compile(
    r"(?:^|\s)[A-Z][a-z\'-]+\s[A-Z]{1,2},\s[A-Z][a-z\'-]+\s[A-Z]{1,2}\b|\bet al\.?,?\s\(?\d{4}|"
    r"\b(?:19|20)\d{2};\s?\d+|\bdoi:|\bPMID\b|https?://|\bpp?\.\s?\d+|\bJournal of\b|,\s\d+,\sp\.?\s*$|"
    r"\b[01]\s?=?\s?No;?\s[01]\s?=?\s?Yes\b")  # the last one: a form's answer scale "0 No; 1 Yes"
# Citation markers "(6)", "[6]", "(6,9-12)", "[3, 4]": the number names a reference, not a fact.
_CITATION = re.compile(r"\s?(?:\((?:\d{1,3}(?:\s?[,–-]\s?)?)+\)|\[(?:\d{1,3}(?:\s?[,–-]\s?)?)+\])")
_ENUMERATOR = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3})*[.)-]?\s*)+(?=[A-Z])")  # "19 Once ...", "13.Akan", "8.Statistical"
_BULLET = re.compile(r"^(?:[-*+•]|\d+[.)])\s+")


def _clean(text: str) -> str:
    text = re.sub(r"\*\*|__|`|^#+\s*", "", text)
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences and list items of a chunk, markup removed (wrapped lines joined)."""
    out: list[str] = []
    paragraph: list[str] = []

    def flush():
        if paragraph:
            joined = _clean(" ".join(paragraph))
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", joined):
                sentence = _ENUMERATOR.sub("", _CITATION.sub("", sentence).strip()).strip()
                if sentence:
                    out.append(sentence)
            paragraph.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _SKIP_LINE.match(stripped) or _TOC_LINE.search(stripped) or _PAGE_LINE.match(stripped):
            flush()
            continue
        if stripped.startswith("#"):
            flush()
            paragraph.append(stripped)
            flush()
            continue
        if _BULLET.match(stripped):
            flush()  # a list item starts a new unit; its wrapped lines join it
            stripped = _BULLET.sub("", stripped)
        paragraph.append(stripped)
    flush()
    return out


def _score(sentence: str) -> int:
    score = 2 * bool(re.search(r"\d", sentence))
    score += bool(re.search(r"\b[A-Z]{1,5}-\w*\d", sentence))
    score += bool(re.search(r"\b(?:must|at least|at most|up to|no more than|only|never|always|required)\b", sentence, re.I))
    score += bool(re.search(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]+ [A-Z][a-z]+", sentence))
    return score


_FINITE = rf"{_COPULA}|will|shall|would|could|might|\w+ing|\w+ed"


def _is_fact_sentence(s: str) -> bool:
    words = s.split()
    if s[:1].islower():  # a piece of a sentence, cut by a page break, a column or the chunk
        return False
    if re.search(r"\bpage \d+ of \d+\b", s, re.I):  # running headers and footers
        return False
    numbers = re.findall(r"(?<![\w.])[\d.,%()]*\d[\d.,%()]*(?![\w])", s)
    if len(numbers) >= 3 and len(numbers) >= 0.3 * len(words):  # a table row without its headers
        return False
    if re.search(r"(?:\b\d[\d.,%]*\s+){3,}\d", s):  # a run of bare numbers: table cells
        return False
    if len(re.findall(r"(?:^|\s)[A-Z][\w/().,-]*(?:\s[\w/().,-]+){0,4}:\s", s)) >= 2 and not _record(s):
        return False  # a form laid out in columns ("Rated Power: 160 hp Operator: Maxair"): labels and values mixed
    capitalised = sum(w[:1].isupper() for w in words if w.isalpha() and len(w) > 3)
    if not s.endswith((".", "!")) and capitalised >= 0.6 * max(1, sum(w.isalpha() and len(w) > 3 for w in words)):
        return False  # a heading, not a statement
    if _REFERENCE_ENTRY.search(s):
        return False
    if not s.endswith((".", "!")) and not re.search(rf"\b(?:{_FINITE})\b", s):
        return False  # a label or a cell ("Successful completion of treatment 1-4 years"), not a statement
    return (25 <= len(s) <= 320 and len(words) >= 5 and not s.endswith(("?", ":"))
            and re.search(rf"\b(?:{_COPULA}|\w+s|\w+ed)\b", s) is not None)


def _wh_for_unit(span: str) -> str:
    unit = re.sub(rf"^{_NUM}\s?", "", span)
    for pattern, wh in _UNIT_WH:
        if re.fullmatch(pattern, unit):
            return wh
    return "how much"


def find_value_spans(sentence: str) -> list[tuple[int, int, str]]:
    """Every value of the sentence, most specific kind first, without overlaps: [(start, end, wh-phrase)]."""
    spans: list[tuple[int, int, str]] = []
    for pattern, kind in _SPAN_PATTERNS:
        for m in re.finditer(pattern, sentence):
            wh = kind
            if sentence[m.end():m.end() + 1] == "/" or sentence[max(0, m.start() - 1):m.start()] == "/":
                continue  # "24/7", "3/4": a ratio, not a value to ask for
            if wh != "which code" and _part_of_name_or_range(sentence, m.start(), m.end(), wh):
                continue
            if wh == "which code" and re.search(r"(?:(?<=\w )[A-Z][a-z]+|\b[Aa]n?)\s$", sentence[:m.start()]):
                continue  # a model name after its make ("a Piper PA-28-140", "an RV-8"), not a code to look up
            if wh == "how many" and re.fullmatch(r"\d{4}", m.group()) and re.match(
                    r"^\s(?:\w+\s){0,2}time\b|^\s?(?:hours?|hrs|UTC|local)\b", sentence[m.end():]):
                wh = "what time"  # "1145 central daylight time"
            if all(m.end() <= a or m.start() >= b for a, b, _ in spans):
                spans.append((m.start(), m.end(), _wh_for_unit(m.group()) if wh == "unit" else wh))
    return spans


def _part_of_name_or_range(sentence: str, start: int, end: int, wh: str = "") -> bool:
    """A number that is part of a name ("interleukin-2", "SPSS 26.0", "Visit 1", "Grade 3 or 4") or one end
    of a range or list ("1-4 years", "1 and 3 months"): asking "interleukin-how many?" makes no sense."""
    before, after = sentence[:start], sentence[end:]
    name_before = re.search(r"(?<=\w )([A-Z][a-z]+)\s$", before)  # "the Cessna 152" (not "In 2019" at the start)
    if name_before and not re.fullmatch(_MONTHS, name_before.group(1)):
        return True
    return bool(re.search(r"[A-Za-z][-–]?$|\b[A-Z]{2,}\s$", before)  # "CDK4", "IL-2", "SPSS 26"
                or re.search(r"\b(?:version|v|visit|grade|stage|phase|cycle|arm|day|week|step|"
                          r"table|figure|section|appendix|item|question|level|type|class|model|no|number|runway|title|part|"
                          r"route|flight|room|ward|building|site|protocol)\.?\s?$",
                          before, re.I)
                or re.match(r"^\s(?:[A-Z]{2,}|(?:[A-Z]\.){2,})", after)  # "49 U.S.C.", "14 CFR": a statute
                or re.match(r"^[A-Za-z]|^\.\d|^[-–]\d|^[-–][A-Za-z]|^\s?[-–]\s?\d|^\s(?:or|and|-)\s\d", after)
                # "10:00 to 15:00", "EUR 5 to EUR 9": the question rules ask for the whole range
                or (wh not in ("what time", "what date", "how much") and re.match(r"^\s(?:to)\s\d", after))
                or re.search(r"\d\s?[-–]\s?$|\d\s(?:or|and|to)\s$", before))


def find_answer_span(sentence: str) -> tuple[int, int, str] | None:
    """(start, end, wh-phrase) of the most specific value in the sentence (amount, date, code, number)."""
    spans = find_value_spans(sentence)
    return spans[0] if spans else None


_FUNCTION_WORDS = set("the a an our your its their his her my every each all any some this that these those "
                      "what how which who when where why can do does did is are was were will should may must "
                      "if in on at for from after before with without during".split())


def _lower_first(s: str) -> str:
    """Lower-case the first word only when it is a function word, never a name ("Lumora", "K7")."""
    first = s.split(" ", 1)[0]
    return s[:1].lower() + s[1:] if first.lower() in _FUNCTION_WORDS else s


def _in_place_question(sentence: str, span: tuple[int, int, str]) -> str | None:
    start, end, wh = span
    head, tail = sentence[:start], sentence[end:].rstrip(" .!")
    # Drop trailing clauses after the asked-for value so the question stays short.
    cut = re.search(r"[;(]|,\s", tail)
    if cut and len(tail) > 40:
        tail = tail[:cut.start()]
    q = f"{head}{wh}{tail}".strip()
    if len(q) - len(wh) < 20:  # nothing left to ask about
        return None
    return (q[0].upper() + q[1:]).rstrip(" ,;:") + "?"


# "What is X?" only where the sentence says what X is: not for a passive ("was founded"), a place or a
# condition ("is under the jurisdiction of", "is within 30 days"), an adverb or an adjective ("is medically
# necessary", "is responsible for"): "What is the investigation?" -> "under the jurisdiction of ..." asks nothing.
_NOT_A_DEFINITION = re.compile(
    r"(?i)(?:\w+ly\s+)?\w+(?:ed|en|ing|ible|able|ary|ant|ent)\b|(?:in|on|at|by|for|from|to|with|of|under|over|"
    r"within|between|about|into|through|without|during|after|before|above|below|near|outside|inside|against|among|"
    r"via|per|not|also|still|only|now|then|often|always|never|very|so|too|more|less|most|least)(?=\s|$)")


def _fronted_question(sentence: str) -> str | None:
    s = sentence.rstrip(" .!")
    m = re.match(r"^(?P<subj>(?:The|A|An|Our|Its|Each|Every)\s[^,;]{3,70}?)\s(?P<verb>is|are|was|were)\s(?P<rest>.{2,})$", s)
    if m and is_noun_phrase(m["subj"]) and not _NOT_A_DEFINITION.match(m["rest"]):
        return f"What {m['verb']} {_lower_first(m['subj'])}?"  # not for passives: "What was the company?"
    m = re.match(r"^(?P<subj>[^,;]{3,60}?)\s(?:has|have)\s(?:a|an)\s(?P<attr>[^,;]{3,50}?)\sof\s(?P<val>.+)$", s)
    if m and is_noun_phrase(m["subj"]):
        return f"What is the {m['attr']} of {_lower_first(m['subj'])}?"
    return None


# A subject is a noun phrase: a regex that takes the words before the first verb-like word ("cost", "are")
# also takes clauses ("the Northwind Standard plan does not cover the", "You can also contact X if you",
# "the plan covers injections when they"); those are cut sentences, not subjects to ask about.
_CLAUSE_WORD = re.compile(r"(?i)\b(?:not|does|do|did|doesn't|don't|if|when|whenever|whether|because|unless|"
                          r"although|you|we|they|he|she|i)\b")
_PRONOUNS = {"you", "we", "they", "he", "she", "i", "it", "me", "us", "them", "him"}


def is_noun_phrase(subject: str) -> bool:
    """Whether the words taken as a sentence's subject read as one noun phrase, not a cut clause."""
    words = subject.strip(" ,.:;'\"").split()
    if not words:
        return False
    last = words[-1].lower()
    return not (last in _FUNCTION_WORDS or last in _DANGLING or last in _PRONOUNS or _CLAUSE_WORD.search(subject))


def _names_the_document(subject: str, chunk: ChunkView) -> bool:
    """A topic made only of the document's own name ("Northwind Standard" in Northwind_Standard_Benefits.pdf)
    names no fact of the page: every sentence of the document is about it."""
    doc_words = set(re.findall(r"[a-z0-9]+", re.sub(r"\.\w+$", "", chunk.doc).lower()))
    words = [w for w in re.findall(r"[a-z0-9]+", subject.lower()) if w not in _FUNCTION_WORDS]
    return bool(words) and all(w in doc_words for w in words)


def _topic(sentence: str, chunk: ChunkView) -> str | None:
    m = re.match(rf"^(?P<subj>(?:The|A|An|Our|Its|Each|Every|All|Any|[A-Z][\w-]*)(?:\s[\w\"'-]+){{1,7}}?)\s(?:{_COPULA})\b",
                 sentence)
    if m and not re.search(r"\b(?:it|this|that|these|those|they)\b|^(?:all|any|each|every|your|our|since|although|"
                           r"because|when|if|while|as|no|in|on|at|for|once|after|before|during|upon|unless|until|whether)\b|\d"
                           r"|\s(?:we|i|they|he|she)$", m["subj"], re.I):
        subject = m["subj"].strip(" ,.:;'")
        if (len([w for w in subject.split() if w.lower() not in _FUNCTION_WORDS]) >= 2 and is_noun_phrase(subject)
                and not _names_the_document(subject, chunk)):
            return _lower_first(subject.replace('"', "") if subject.count('"') % 2 else subject)
    # No fallback to the section heading: "What is stated about Analysis?" names no fact a person asks for.
    return None


_DANGLING = set("and or of the a an to in on for with by from at as vs".split())


def _section_topic(section: str | None) -> str | None:
    """A heading fit to ask about: words, not numbers, dates, versions or a heading cut off mid-phrase."""
    if not section:
        return None
    name = re.sub(r"^[\d.]+\s*", "", section.split(">")[-1].strip()).strip(" .:")
    words = name.split()
    if (not name or len(words) > 8 or re.search(r"\d|[:|;,]", name) or words[-1].lower() in _DANGLING
            or _CONTENTS.search(name) or _REFERENCES.search(name) or not re.search(r"[A-Za-z]{3}", name)):
        return None
    return _lower_first(name)


def _doc_label(chunk: ChunkView) -> str:
    label = re.sub(r"\.\w+$", "", chunk.doc).replace("_", " ").replace("-", " ")
    return f"the {label}" + (f" (page {chunk.page})" if chunk.page else "")


def _faq_pairs(text: str) -> list[tuple[str, str]]:
    """Question lines (FAQ headings) followed by their answer sentence."""
    pairs = []
    lines = [ln.strip() for ln in text.splitlines()]
    for i, line in enumerate(lines):
        q = _clean(line)
        if q.endswith("?") and 10 <= len(q) <= 200:
            body = []
            for nxt in lines[i + 1:]:
                if not nxt or nxt.startswith("#") or _clean(nxt).endswith("?"):
                    break
                body.append(nxt)
            answer = split_sentences("\n".join(body))
            if answer:
                pairs.append((q, " ".join(answer[:2])))
    return pairs


def _record(sentence: str) -> list[tuple[str, str]] | None:
    """'key: value; key: value; ...' (a table or CSV row as retrieval renders it) as pairs."""
    parts = [p.strip() for p in sentence.rstrip(".").split(";")]
    pairs = [tuple(x.strip() for x in p.split(":", 1)) for p in parts if ":" in p]
    return pairs if len(pairs) >= 3 and len(pairs) == len(parts) else None


_UNIT_SUFFIXES = {"eur": "EUR", "usd": "USD", "gbp": "GBP", "days": "days", "hours": "hours", "kg": "kg", "mm": "mm",
                  "pct": "percent", "percent": "percent", "minutes": "minutes", "months": "months", "years": "years"}


def _column_label(key: str) -> str:
    """'price_eur' -> 'price in EUR', 'stock_lead_time_days' -> 'stock lead time in days'."""
    words = key.replace("-", "_").split("_")
    if len(words) > 1 and words[-1].lower() in _UNIT_SUFFIXES:
        return f"{' '.join(words[:-1])} in {_UNIT_SUFFIXES[words[-1].lower()]}"
    return " ".join(words)


def _record_questions(pairs: list[tuple[str, str]]) -> list[str]:
    """Questions a person asks about one table row: its identifier by name first, then each column."""
    ident_key, ident = pairs[0]
    name = next((v for k, v in pairs[1:] if k.lower() in ("name", "title", "city", "product")), None)
    if not name:
        return [f"What is the {_column_label(k)} of {ident}?" for k, v in pairs[1:] if v]
    label = name[:1].lower() + name[1:] if name[1:2].islower() else name
    questions = [f"What is the {_column_label(ident_key)} of the {label}?"]
    questions += [f"What is the {_column_label(k)} of the {label} ({ident})?" for k, v in pairs[1:] if v and v != name]
    return questions


def worth_asking_about(chunk: ChunkView) -> bool:
    """False for a table of contents, an index or a reference list: no facts a user would ask for."""
    heading = (chunk.section or "").split(">")[-1]
    if _CONTENTS.search(heading) or _REFERENCES.search(heading.strip(" .:")):
        return False
    lines = [ln.strip() for ln in chunk.text.splitlines() if ln.strip()]
    navigation = sum(bool(_TOC_LINE.search(ln)) for ln in lines)
    return not (lines and navigation >= max(3, 0.3 * len(lines)))


# ---------------------------------------------------------------- questions a person would not ask

_WH = r"(?:how (?:many|much|long)|what (?:date|time|percentage|year)|which code)"
_NUMBER_TOKEN = re.compile(r"(?<![\w.])[$€£]?\s?\d[\d,.]*%?(?![\w])")
MAX_QUESTION_WORDS = 32


def question_defect(question: str) -> str | None:
    """Why a rule-made question is not one a person would ask about one value, or None.

    Read on 60 sampled rows of nih-protocols (a PDF corpus of tables, forms and references), 50 were such
    rows: a cloze over a run of numbers or a whole cut sentence, a value asked inside a name or an address
    ("49 U.S.C. § how many(b)", "how many Govan Road"), a wh-phrase with nothing to count ("every how
    many?"), a code asked where there is none (docs/training.md)."""
    q = question.strip()
    if len(q.split()) > MAX_QUESTION_WORDS:
        return "a whole sentence with a gap"
    if len(_NUMBER_TOKEN.findall(q)) >= 2:
        return "a cloze over a run of numbers"
    if re.search(rf"\S{_WH}|{_WH}[^\s?,]|{_WH}\s+(?!I\b)[A-Z]", q):
        return "the value is part of a name, an address or a code"
    if re.search(rf"(?i)\b(?:or|and)\s+{_WH}\b|\b{_WH}\s+(?:and|or|to)\b|\b{_WH}\+|\bfrom\s+{_WH}\b[^?]*\sto\s+[$€£]?\d",
                 q):
        return "one end of a range or a list"
    if re.search(r"(?<=\s)(?:Otherwise|However|Finally|Furthermore|Moreover|Additionally|Thus|Therefore|"
                 r"Specifically|Subsequently)\b|[•▪①②③]|^(?:Therefore|However|Thus|Furthermore|Moreover),", q):
        return "two sentences or a list run together"
    if re.search(r"\bpp\b|‘[^’]{10,}’,", q):
        return "a reference entry"
    if re.search(rf"(?i){_WH},|:\s*{_WH}\?$|[<>≤≥]\?$|\bhow many\s+(?:as|it|by|of|to|in|on|at|for|with|and|or|"
                 r"the|a|an|is|are|was|were|will|be|momentum)\b", q):
        return "nothing to count"
    if re.search(r"(?i)\b(?:a|an|the)\s+(?:how|what|which)\b", q):
        return "a wh-phrase after an article"
    if re.search(r"(?i)\b(?:every|around|about|approximately|follow-up)\s+how (?:many|much)\?$", q):
        return "nothing to count"
    if "which code" in q and not re.match(r"(?i)what (?:does|is) [A-Z0-9]", q):
        return "no code to ask for"
    if re.search(r"(?i)\bwhat (\w+) is the \1\b", q):
        return "asks for the word it names"
    return None


def without_lead_in(sentence: str, chunk: ChunkView) -> str:
    """The sentence without a bullet or the section heading that PDF text runs into it ("Analysis While
    conducting an approach, ...")."""
    s = re.sub(r"^(?:[o•▪◦*–-]|\d+[.)])\s+(?=[A-Z])", "", sentence)
    s = re.sub(r"^[A-Z][\w /&-]{2,40}:\s+(?=[A-Z])", "", s)  # "Study Duration: The duration ..."
    heading = re.sub(r"^[\d.]+\s*", "", (chunk.section or "").split(">")[-1].strip()).strip(" .:")
    if heading and s.lower().startswith(heading.lower() + " ") and s[len(heading) + 1:len(heading) + 2].isupper():
        return s[len(heading) + 1:]
    # A heading the chunk does not name: a few words without punctuation, then a sentence that opens with a
    # capital article or conjunction ("Schedule of activities The duration of the project will be ...").
    run_in = _RUN_IN_HEADING.match(s)
    return s[run_in.end():] if run_in else s


_RUN_IN_HEADING = re.compile(r"^[A-Z][^.,;:()]{2,60}?\s(?=(?:The|A|An|During|While|After|Before|Each|All|Every|"
                             r"This|These|Patients|Subjects|Participants)\s[a-z])")


class ExtractiveTeacher:
    """Deterministic questions from fact-bearing sentences; answers quote the source sentence."""

    name = "extractive"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def facts(self, chunk: ChunkView, questions_per_fact: int = 3, max_facts: int = 6) -> list[Fact]:
        if not worth_asking_about(chunk):
            return []
        rng = random.Random(f"{self.seed}:{chunk.chunk_id}")
        facts: list[Fact] = []
        faq = _faq_pairs(chunk.text)
        answered = set()
        for q, a in faq:
            facts.append(Fact(self._paraphrases(q, a, chunk, rng, questions_per_fact, given=q), a, a))
            answered.update(split_sentences(a))
        sentences = split_sentences(chunk.text)
        for sentence in sentences:
            pairs = _record(sentence)
            if pairs and len(facts) < max_facts:
                questions = _record_questions(pairs)
                if questions:
                    first, rest = questions[:1], questions[1:]
                    rng.shuffle(rest)
                    facts.append(Fact((first + rest)[:questions_per_fact], sentence, sentence))
                answered.add(sentence)
        candidates = [s for s in sentences if _is_fact_sentence(s) and s not in answered]
        ranked = sorted(enumerate(candidates), key=lambda t: (-_score(t[1]), t[0]))
        picked = sorted((i, s) for i, s in ranked if _score(s) > 0)[: max(0, max_facts - len(facts))]
        for _, sentence in picked:
            facts.append(Fact(self._paraphrases(sentence, sentence, chunk, rng, questions_per_fact), sentence, sentence))
        for i, f in enumerate(facts):
            f.fact_id = i
        return [f for f in facts if f.questions][:max_facts]

    def _paraphrases(self, sentence: str, answer: str, chunk: ChunkView, rng: random.Random, n: int,
                     given: str | None = None) -> list[str]:
        core: list[str] = [given] if given else []
        if not given:
            sentence = without_lead_in(sentence, chunk)
        span = find_answer_span(sentence)
        if not given:  # questions a person would ask first, then the simpler fallbacks
            natural = [q for q in (wh_question(sentence, *s, context=chunk.text)
                                     for s in find_value_spans(sentence)[:3]) if q and not question_defect(q)]
            if natural:  # then its "how long" form and the same question tied to its document
                core += [q for q in (natural[0], how_long(natural[0])) if q]
                core.append(f"According to {_doc_label(chunk)}, {_lower_first(natural[0])}")
                core += natural[1:]
            fronted = _fronted_question(sentence)
            in_place = _in_place_question(sentence, span) if span else None
            if span and span[0] == 0 and span[2] == "which code":  # "E-509 Emergency stop button pressed."
                code = sentence[: span[1]]
                in_place = f"What does {code} mean?"
                core.append(f"What is {code}?")
            core += [q for q in (fronted, in_place) if q and not question_defect(q)]
        topic = _topic(sentence, chunk) if not given else None
        doc = _doc_label(chunk)
        base = core[0] if core else None
        variants = []
        if base:
            lowered = _lower_first(base)
            variants += [f"According to {doc}, {lowered}", f"Quick question: {lowered}",
                         f"Can you tell me: {lowered}", f"I need to know this. {base}"]
        if topic:
            variants += [f"What does {doc} say about {topic}?", f"What is stated about {topic}?"]
        rng.shuffle(variants)
        out, seen = [], set()
        for q in core + variants:
            key = re.sub(r"\W+", " ", q.lower()).strip()
            if key not in seen:
                seen.add(key)
                out.append(q)
        return out[:n]
