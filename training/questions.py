"""Natural wh-questions from one fact sentence, by rule (no model needed).

"Full-time employees get 27 vacation days per year." becomes "How many vacation days do full-time
employees get per year?": the value is replaced by a wh-phrase that moves to the front, with
auxiliary inversion ("must a badge be reported") or do-support ("does the K7 reach"). Questions
worded like a person would ask them, rather than the sentence with a gap, are what lets a tuned
model recall the fact when users word the question their own way. A sentence with several values
gives one question per value. Returns None where the sentence does not fit the rules; the caller
keeps its simpler fallbacks for those.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_AUX = {"is", "are", "was", "were", "must", "can", "may", "will", "should", "shall", "might", "could", "would"}
_HAVE = {"has": "does", "have": "do", "had": "did"}
# Verbs that state facts in manuals and policies; their -s / -ed forms are recognised too.
_VERBS = set("""get give receive take cost last need reach carry cover include require offer pay allow manage run
support use provide raise lock expire apply start begin end respond arrive charge ship weigh accept contain hold
keep measure mean reduce increase replace return operate reimburse refund earn grant entitle add drive lift move
travel handle store process release fix introduce save cut double triple rise fall drop exceed come guarantee
serve employ produce sell deliver""".split())
_IRREGULAR_PAST = {"took": "take", "gave": "give", "got": "get", "ran": "run", "began": "begin", "paid": "pay",
                   "held": "hold", "kept": "keep", "rose": "rise", "fell": "fall", "cut": "cut"}
_DROP_PREP = ("up to", "at least", "at most", "no more than", "more than", "less than", "a maximum of",
              "a minimum of")
_FRONT_PREP = ("within", "after", "before", "for", "every", "by", "on", "in", "from", "until", "above", "below",
               "over", "under", "at")
_STRAND_PREP = ("of", "to", "per")
_INTRO = re.compile(r"^(?:After|Before|During|If|When|Once|Unless|Within|For|In|On|From|Without|Outside|Since|"
                    r"Until|Between|Under|Above|Below|At|Through|Via|With)\b[^,]{2,60},\s+")
_VALUE = r"(?:EUR|USD|GBP|\$|€|£)?\s?\d[\d,.:]*"
_STOP_NOUN = set("per a an the of to in on at for and or by from with within after before each every is are was "
                 "were be must can may will plus".split())


def _verb(word: str) -> tuple[str, str] | None:
    """(do-form, lemma) of a lexical verb: 'gets' -> ('does', 'get'); None if not a known verb form."""
    w = word.lower()
    if w in _VERBS:
        return "do", w
    if w in _IRREGULAR_PAST:
        return "did", _IRREGULAR_PAST[w]
    for suffix, repl, do in (("ies", "y", "does"), ("es", "", "does"), ("s", "", "does"),
                             ("ied", "y", "did"), ("ed", "", "did"), ("ed", "e", "did"), ("d", "", "did")):
        if w.endswith(suffix) and w[: len(w) - len(suffix)] + repl in _VERBS:
            return do, w[: len(w) - len(suffix)] + repl
    return None


_FUNCTION = set("the a an our your its their his her my every each all any some this that these those you we they "
                "i it he she after before during if when once unless within for in on from without outside since "
                "through until between under above below at by with to of one two three new full standard remote "
                "business client approved carried working travel parental sick default hotel".split())
_SUBORDINATE = set("if when where while although because though unless once as after before during within for in upon "
                   "on from without since until between under above below at by with to of through via please "
                   "and or but so".split())
_DETERMINERS = {"your", "the", "a", "an", "all", "every", "any", "each", "our", "both"}


def names_in(text: str) -> frozenset[str]:
    """Capitalised words seen inside sentences (not first): names such as "Lumora", "Orbit", "WayPoint"."""
    return frozenset(re.findall(r"(?<=[\w,;)] )([A-Z][\w-]*)", text))


def _lower_first(s: str, names: frozenset[str] = frozenset()) -> str:
    """Lower-case a leading common word ("The", "Core", "Full-time"), never a name ("Lumora", "K7", "OrbitOS")."""
    first = s.split(" ", 1)[0]
    plain = first[:1].isupper() and (first[1:].islower() or len(first) == 1) and first.replace("-", "").isalpha()
    if plain and (first.split("-")[0].lower() in _FUNCTION or first not in names):
        return first.lower() + s[len(first):]
    return s


def _cut_tail(tail: str) -> str:
    tail = re.split(r"[;(]|,\s|\s[-–—]\s|:\s|\s(?:and|or|but|which|whichever|so that|where|plus)\s", tail,
                    maxsplit=1)[0].strip()
    return "" if re.match(r"(?i)^of\b", tail) else tail  # "within 2 hours of noticing": part of the value


def _count_noun(after: str) -> tuple[str, int]:
    """The noun phrase counted by a bare number: '27 vacation days per year' -> ('vacation days', chars used)."""
    words, used = [], 0
    for m in re.finditer(r"\S+", after):
        w = m.group().rstrip(",.;:")
        if w.lower() in _STOP_NOUN or not re.fullmatch(r"[a-zA-Z][\w-]*", w) or len(words) == 3:
            break
        words.append(w)
        used = m.start() + len(w)
        if m.group() != w:  # punctuation ends the phrase
            break
    return " ".join(words), used


class _Verb(NamedTuple):
    """The main verb of a fact sentence, and how a question fronts it."""

    index: int  # of its token
    kind: str  # "aux": the verb itself moves to the front ("must a badge"); "do": do-support ("does the K7 reach")
    form: str  # what goes to the front: the auxiliary, or do / does / did
    lemma: str  # what stays behind with do-support: "reach"
    word: str  # as written in the sentence


def wh_question(sentence: str, start: int, end: int, wh: str, context: str = "") -> str | None:
    """A fronted wh-question asking for sentence[start:end] (the value), or None if the rules do not fit.
    `context` (the surrounding text) tells names from common words when the subject moves mid-question."""
    names = names_in(f"{context} {sentence}")
    s, start, end, intro = _without_label_and_intro(sentence, start, end)
    tokens = list(re.finditer(r"\S+", s))
    verb = _main_verb(tokens, start)
    if not verb or tokens[verb.index].end() > start:
        return None
    subject = _plain_subject(s[: tokens[verb.index].start()])
    if subject is None:
        return None  # not a plain subject: an imperative, a clause, a heading glued to text, a record
    pre = s[tokens[verb.index].end(): start]
    if re.search(r"(?i)\b(?:which|who|where|that)\b|for example|[,;:]|(?<![\w-])\d", pre):
        return None  # the value sits in a clause, an aside or a range, not in the main clause
    prep, pre = _preposition_before(pre)
    after = s[end:]
    value_range = re.match(rf"^\s*(?:to|-|–)\s*{_VALUE}", after)
    if value_range and verb.form in ("is", "are", "was", "were") and not pre.strip():
        # "Core hours are 10:00 to 15:00 from Monday to Thursday" -> "What are core hours from Monday to Thursday?"
        tail = _cut_tail(after[value_range.end():])
        return _finish(f"what {verb.form} {_lower_first(subject, names)} {tail}", _lower_first(intro, names))
    asked = _wh_phrase(wh, after, prep)
    if asked is None:
        return None
    wh, after = asked
    q = _fronted(wh, verb, _lower_first(subject, names), prep, pre.strip(" ,"), _cut_tail(after))
    return _finish(q, _lower_first(intro, names))


def _without_label_and_intro(sentence: str, start: int, end: int) -> tuple[str, int, int, str]:
    """The sentence without a leading label ("Parental leave: every new parent gets ...") or introductory
    phrase ("After 2 years of service, ...") before the value, the value's new offsets, and the phrase,
    which the question keeps at its end."""
    s = sentence.rstrip(" .!")
    label = re.match(r"^[A-Z][\w /&-]{2,40}:\s+", s)
    if label and label.end() <= start:
        offset = label.end()
        s, start, end = s[offset:], start - offset, end - offset
        s = s[:1].upper() + s[1:]
    intro = ""
    m = _INTRO.match(s)
    if m and m.end() <= start:
        intro = m.group().rstrip(", ")
        offset = m.end()
        s, start, end = s[offset:], start - offset, end - offset
    return s, start, end, intro


def _main_verb(tokens: list[re.Match], start: int) -> _Verb | None:
    """The first auxiliary, form of "have" or known lexical verb (before the value) among the first words."""
    for i, tok in enumerate(tokens[1:13], start=1):
        word = tok.group().strip(",").lower()
        if tokens[i - 1].group().lower() in ("who", "that", "which", "to"):
            continue  # a relative clause or infinitive inside the subject
        nxt = tokens[i + 1].group().lower() if i + 1 < len(tokens) else ""
        if i + 1 < len(tokens) and (nxt in _AUX or nxt == "not") and word not in _AUX:
            continue  # "Hotel costs may not exceed": the noun before a modal is not the verb
        written = tok.group().strip(",")
        if word in _AUX:
            return _Verb(i, "aux", word, word, written)
        if word in _HAVE:
            is_aux = nxt == "been" or re.fullmatch(r"\w+(?:ed|en)", nxt) is not None
            return _Verb(i, "aux", word, word, written) if is_aux else _Verb(i, "do", _HAVE[word], "have", written)
        if _verb(word) and tok.start() < start:
            do, lemma = _verb(word)
            return _Verb(i, "do", do, lemma, written)
    return None


def _plain_subject(subject: str) -> str | None:
    """The subject before the verb, or None where it is not a plain noun phrase."""
    subject = subject.strip(" ,")
    if "," in subject:  # "every new parent, regardless of gender," -> "every new parent"; "Quayline, you" -> "you"
        parts = [p.strip() for p in subject.split(",") if p.strip()]
        subject = parts[-1] if parts[-1].lower() in ("you", "we", "they", "he", "she") else parts[0]
    first = subject.split(" ", 1)[0].lower() if subject else ""
    if (not (1 <= len(subject.split()) <= 12) or first in ("it", "this", "that", "these", "those", "they", "there")
            or first in _SUBORDINATE or first in _VERBS or _verb(first) or first[:1].isdigit()
            or re.search(r"\s[-–—]\s|\b[A-Z]{3,}\s[A-Z]{3,}\b|[;:]|\s(?:The|A|An)\s", subject)
            or (len(subject.split()) >= 2 and first not in _FUNCTION
                and subject.split()[1].lower() in _DETERMINERS)):
        return None
    return subject


def _preposition_before(pre: str) -> tuple[str, str]:
    """(the preposition right before the value, or "", and the words between verb and value without it)."""
    for p in _DROP_PREP + _FRONT_PREP + _STRAND_PREP:
        if re.search(rf"(?:^|\s){re.escape(p)}\s*$", pre, re.I):
            return p, re.sub(rf"\s*{re.escape(p)}\s*$", "", pre, flags=re.I)
    return "", pre


def _wh_phrase(wh: str, after: str, prep: str) -> tuple[str, str] | None:
    """The wh-phrase with what it counts ("how many vacation days"), and the rest of the sentence after it;
    None where a bare number counts nothing."""
    if wh == "how many":
        noun, used = _count_noun(after)
        if not noun:
            return None
        wh, after = f"how many {noun}", after[used:]
    of_phrase = re.match(r"^\s+of\s+((?:[a-zA-Z][\w-]*\s?){1,4}?)(?=\s(?:for|to|in|on|at|per|with|by)\b|[,.;(]|$)",
                         after)
    if of_phrase and wh.startswith("how ") and prep not in _FRONT_PREP:
        # "gets 18 weeks of fully paid parental leave" -> "how many weeks of fully paid parental leave"
        wh, after = f"{wh} of {of_phrase.group(1).strip()}", after[of_phrase.end():]
    return wh, after


def _fronted(wh: str, verb: _Verb, subject: str, prep: str, middle: str, tail: str) -> str:
    """The question's words: the wh-phrase (with its preposition) in front, then the inverted clause."""
    clause = f"{verb.form} {subject}" if verb.kind == "aux" else f"{verb.form} {subject} {verb.lemma}"
    of_np = re.match(r"(?i)^(?:(?P<prep>with|at|for|on)\s)?(?:a|an|the)\s(?P<np>.+)$", middle)
    if prep == "of" and of_np:
        # "X comes with a warranty of 5 years" -> "How many years is the warranty that X comes with?"
        return f"{wh} is the {of_np['np']} that {subject} {verb.word} {of_np['prep'] or ''} {tail}"
    if prep in _FRONT_PREP:
        return f"{prep} {wh} {clause} {middle} {tail}"
    if prep in _STRAND_PREP:
        return f"{wh} {clause} {middle} {prep} {tail}"
    return f"{wh} {clause} {middle} {tail}"


def _finish(q: str, intro: str = "") -> str:
    if intro:
        q = f"{q} {intro}"
    q = re.sub(r"\s+", " ", q).strip(" ,")
    return q[:1].upper() + q[1:] + "?"


def how_long(question: str | None) -> str | None:
    """'How many months is the probation period?' -> 'How long is the probation period?' (durations only)."""
    if not question:
        return None
    m = re.match(r"^(?:For )?[Hh]ow many (?:minutes|hours|days|weeks|months|years) (?!of\b)(?P<rest>.+)$", question)
    return f"How long {m['rest']}" if m else None
