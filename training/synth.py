"""From document chunks to a versioned question/answer training set (RAFT style).

``synthesize(ws, SynthConfig(...), chunks=...)`` asks a teacher for facts and paraphrased questions
per chunk, drops duplicates, too short/long rows and answers the chunk does not support, then
splits train/validation/test **by source chunk** (no chunk feeds two splits, so test questions are
about held-out text). Optional RAFT distractors put the source passage among unrelated passages in
the prompt, so the model learns to answer from context and to ignore noise.

Training does not read documents itself: the caller (CLI, UI) passes the workspace's chunks, e.g.
``retrieval.documents.all_chunks(ws)``; any objects or dicts with chunk_id, doc, text, page, section work.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from ragtune.errors import BadInputError

from .chat_data import qa_to_messages
from .dataset_store import DatasetVersion, get_dataset, latest_dataset, list_datasets, save_dataset_version
from .chat_teachers import OpenAITeacherSettings, openai_teacher
from .teachers import ChunkView, ExtractiveTeacher, Fact, Teacher

__all__ = ["SynthConfig", "synthesize", "list_datasets", "latest_dataset", "get_dataset", "DatasetVersion"]

CONTEXT_INSTRUCTION = "Answer the question. Use the passages below if they are relevant; cite them as [n]."
_STOP = set("a an the of to in on at for and or is are was were be by with as it its this that from your our "
            "you we they their can may will must not no do does how what which who when why".split())


TEACHERS = ("extractive", "openai", "local")


@dataclass
class SynthConfig:
    """How a training set is made: from the documents by a teacher, or from the user's file; and its splits.

    ``ragtune synth`` flags are derived from these fields (``ragtune.config_args``)."""

    teacher: str | None = field(default=None, metadata={"choices": TEACHERS, "help": (
        "who writes the questions: extractive (default, no model), openai (any OpenAI-compatible server: "
        "--teacher-url/--teacher-model) or local (ragtune's own engine)")})
    teacher_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"})
    teacher_model: str | None = field(default=None, metadata={
        "help": "model name on that server (or the local model with --teacher local)"})
    teacher_api_key: str | None = field(default=None, metadata={
        "help": "API key for the teacher server (default: $OPENAI_API_KEY or none); never written to disk"})
    requests_per_minute: float = field(default=60.0, metadata={"help": "teacher rate limit"})
    max_retries: int = field(default=4, metadata={"help": "retries of a failed teacher request"})
    workers: int = field(default=4, metadata={"help": "parallel teacher requests (the rate limit still applies)"})
    questions_per_fact: int = field(default=3, metadata={"help": "paraphrased questions per fact"})
    max_facts_per_chunk: int = field(default=6, metadata={"help": "facts asked of the teacher per passage"})
    distractors: int = field(default=0, metadata={"help": (
        "RAFT distractor passages per training prompt (0: closed-book rows)")})
    oracle_fraction: float = field(default=0.8, metadata={
        "help": "with distractors: share of prompts that also hold the source passage"})
    validation_fraction: float = field(default=0.1, metadata={"help": "share of rows kept for the validation loss"})
    test_fraction: float = field(default=0.15, metadata={"help": "share of rows kept aside for evaluation"})
    split_by: str = field(default="chunk", metadata={"choices": ("chunk", "paraphrase"), "help": (
        "hold out whole chunks (default) or one wording of each trained fact")})
    min_question_chars: int = field(default=10, metadata={"help": "shortest question kept"})
    max_question_chars: int = field(default=400, metadata={"help": "longest question kept"})
    min_answer_chars: int = field(default=2, metadata={"help": "shortest answer kept"})
    max_answer_chars: int = field(default=1200, metadata={"help": "longest answer kept"})
    min_support: float = field(default=0.6, metadata={"help": "share of the answer's content words found in the passage"})
    system_prompt: str | None = field(default=None, metadata={"help": "system prompt of the training rows"})
    seed: int = field(default=0, metadata={"help": "random seed of the splits"})
    note: str = field(default="", metadata={"help": "a note kept with the dataset version"})
    from_file: str | None = field(default=None, metadata={"flags": (), "help": (
        "instead of generating: import your own chat JSONL, question/answer JSONL or CSV (split the same way)")})
    then_train: dict | None = field(default=None, metadata={"cli": False})  # a TrainConfig dict: the Build screen

    def __post_init__(self):
        if self.teacher is None:
            self.teacher = "openai" if self.teacher_url else "extractive"

    def validate(self) -> "SynthConfig":
        if self.split_by not in ("chunk", "paraphrase"):
            raise BadInputError("split_by must be 'chunk' or 'paraphrase'.")
        if not (0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1
                and self.validation_fraction + self.test_fraction < 1):
            raise BadInputError("validation and test fractions must be in [0, 1) and leave room for training.")
        if self.questions_per_fact < 1 or self.max_facts_per_chunk < 1:
            raise BadInputError("questions_per_fact and max_facts_per_chunk must be at least 1.")
        if self.teacher == "openai" and not (self.teacher_url and self.teacher_model):
            raise BadInputError("The OpenAI-compatible teacher needs a URL and a model name (--teacher-url, --teacher-model).")
        if self.workers < 1 or self.requests_per_minute <= 0:
            raise BadInputError("workers must be at least 1 and requests_per_minute above 0.")
        if self.distractors < 0 or not 0 <= self.oracle_fraction <= 1:
            raise BadInputError("distractors must be 0 or more and oracle_fraction in [0, 1].")
        return self

    def public(self) -> dict:
        d = asdict(self)
        d.pop("teacher_api_key")
        d.pop("then_train")
        return d


def make_teacher(config: SynthConfig) -> Teacher:
    if config.teacher == "extractive":
        return ExtractiveTeacher(seed=config.seed)
    if config.teacher == "openai":
        return openai_teacher(OpenAITeacherSettings(
            url=config.teacher_url, model=config.teacher_model, api_key=config.teacher_api_key or "EMPTY",
            requests_per_minute=config.requests_per_minute, max_retries=config.max_retries))
    raise BadInputError(f"Unknown teacher '{config.teacher}': use 'extractive' or 'openai', or pass a teacher object.")


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+(?:[.,][0-9]+)*", text.lower()) if w not in _STOP]


def support(answer: str, chunk_text: str) -> float:
    """Share of the answer's content words present in the chunk; numbers must all be present."""
    chunk_words = set(_words(chunk_text))
    chunk_flat = re.sub(r"\s+", " ", chunk_text.lower())
    words = _words(answer)
    if not words:
        return 0.0
    numbers = [w for w in words if any(c.isdigit() for c in w)]
    if any(n not in chunk_words and n not in chunk_flat for n in numbers):
        return 0.0
    return sum(w in chunk_words for w in words) / len(words)


def _line_key(line: str) -> str:
    return re.sub(r"\d+", "#", re.sub(r"\s+", " ", line.strip().lower()))


def without_page_furniture(views: list[ChunkView]) -> list[ChunkView]:
    """Running headers and footers out of the text, and out of the section names that PDF parsing took
    from them: a short line (or section name) repeated on many chunks of one document ("Protocol v3 |
    Page 7 of 40", "Date: 1 August 2023") is page furniture, not content. Numbers count as equal, so page
    numbers do not hide the repetition."""
    by_doc: dict[str, list[ChunkView]] = {}
    for v in views:
        by_doc.setdefault(v.doc, []).append(v)
    # Boilerplate shared by many documents (a legal notice printed on every report) teaches nothing about any
    # one of them and would fill the set with copies of the same question.
    doc_lines = Counter(k for doc_views in by_doc.values()
                        for k in {_line_key(ln) for v in doc_views for ln in v.text.splitlines() if ln.strip()})
    shared = {k for k, n in doc_lines.items() if len(by_doc) >= 4 and n >= max(3, 0.25 * len(by_doc))}
    out: dict[str, ChunkView] = {}
    for doc_views in by_doc.values():
        threshold = max(3, 0.25 * len(doc_views))
        line_counts = Counter(k for v in doc_views for k in {_line_key(ln) for ln in v.text.splitlines()
                                                             if ln.strip() and len(ln.strip()) <= 120})
        section_counts = Counter(_line_key(v.section.split(">")[-1]) for v in doc_views if v.section)
        furniture = shared | {k for k, n in line_counts.items() if n >= threshold and len(doc_views) >= 4}
        for v in doc_views:
            text = "\n".join(ln for ln in v.text.splitlines() if _line_key(ln) not in furniture or not ln.strip())
            section = v.section
            if (section and len(doc_views) >= 4
                    and section_counts[_line_key(section.split(">")[-1])] >= max(threshold, 0.4 * len(doc_views))):
                section = None
            out[v.chunk_id] = ChunkView(v.chunk_id, v.doc, text, v.page, section)
    return [out[v.chunk_id] for v in views if out[v.chunk_id].text.strip()]


def _norm_question(q: str) -> str:
    return " ".join(_words(q))


def _split_groups(keys: list, config: SynthConfig) -> dict[str, set]:
    keys = sorted(keys)
    random.Random(config.seed).shuffle(keys)
    n = len(keys)
    n_test = round(n * config.test_fraction) if n >= 3 else 0
    n_val = round(n * config.validation_fraction) if n >= 3 else 0
    if config.test_fraction > 0 and n >= 3:
        n_test = max(1, n_test)
    if config.validation_fraction > 0 and n >= 5:
        n_val = max(1, n_val)
    n_test = min(n_test, n - 1)
    n_val = min(n_val, n - 1 - n_test)
    return {"test": set(keys[:n_test]), "validation": set(keys[n_test:n_test + n_val]),
            "train": set(keys[n_test + n_val:])}


def synthesize(ws, config: SynthConfig | None = None, progress: Callable[[int, int, str], None] | None = None, *,
               chunks: Iterable, teacher: Teacher | None = None) -> DatasetVersion:
    """Generate, filter and split a Q&A training set from `chunks`; returns the new dataset version."""
    config = (config or SynthConfig()).validate()
    views = _usable_views(ws, chunks)
    teacher = teacher or make_teacher(config)
    results = _ask_teacher(teacher, views, config, progress)
    items, dropped = _usable_questions(results, config, n_docs=len({v.doc for v in views}))
    if not items:
        raise BadInputError(
            f"The {getattr(teacher, 'name', 'teacher')} teacher produced no usable question/answer pairs from "
            f"{len(views)} chunks (dropped: {dict(dropped) or 'none'}). Check the documents' text, or use another teacher."
        )
    splits = _split_rows(items, config, {v.chunk_id: v for v in views})
    manifest = {
        "source": "synth", "teacher": getattr(teacher, "name", type(teacher).__name__), "split_seed": config.seed,
        "split_by": config.split_by, "config": config.public(), "chunks_total": len(views),
        "chunks_used": len({it["chunk_id"] for it in items}),
        "split_chunks": {s: sorted({r["chunk_id"] for r in rows}) for s, rows in splits.items()},
        "facts": len({it["fact"] for it in items}), "dropped": dict(dropped),
        "teacher_failures": getattr(teacher, "failures", 0), "note": config.note,
    }
    return save_dataset_version(ws, splits, manifest)


def _usable_views(ws, chunks: Iterable) -> list[ChunkView]:
    """The chunks with text, running headers and footers taken out."""
    views = [ChunkView.of(c) for c in chunks or []]
    views = [v for v in views if v.text.strip()]
    if not views:
        raise BadInputError(f"Workspace '{ws.name}' has no document chunks: ingest documents first "
                            "(`ragtune ingest PATH`), then run `ragtune synth`.")
    return without_page_furniture(views)


def _ask_teacher(teacher: Teacher, views: list[ChunkView], config: SynthConfig,
                 progress: Callable[[int, int, str], None] | None) -> list[tuple[ChunkView, list[Fact]]]:
    """Each chunk's facts, in chunk order; a model teacher is asked by `config.workers` threads at once."""
    def work(view: ChunkView):
        return view, teacher.facts(view, config.questions_per_fact, config.max_facts_per_chunk)

    results = []
    workers = 1 if isinstance(teacher, ExtractiveTeacher) else max(1, config.workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (view, facts) in enumerate(pool.map(work, views), 1):
            results.append((view, facts))
            if progress:
                progress(i, len(views), view.doc)
    return results


def _usable_questions(results: list[tuple[ChunkView, list[Fact]]], config: SynthConfig,
                      n_docs: int) -> tuple[list[dict], Counter]:
    """One item per question kept, and the count of questions dropped for each reason: boilerplate answers,
    answers too short or long or not supported by the chunk, questions too short or long, duplicates."""
    boilerplate = _boilerplate_answers(results, n_docs)
    dropped: Counter = Counter()
    seen: set[str] = set()
    items = []
    for view, facts in results:
        for fact in facts:
            reason = _fact_defect(fact, view, config, boilerplate)
            if reason:
                dropped[reason] += len(fact.questions)
                continue
            for q_index, question in enumerate(fact.questions):
                if not (config.min_question_chars <= len(question) <= config.max_question_chars):
                    dropped["question_length"] += 1
                    continue
                key = _norm_question(question)
                if key in seen:
                    dropped["duplicate"] += 1
                    continue
                seen.add(key)
                items.append({"chunk_id": view.chunk_id, "fact": f"{view.chunk_id}#{fact.fact_id}",
                              "q_index": q_index, "question": question, "answer": fact.answer,
                              "quote": fact.quote, "doc": view.doc, "page": view.page, "section": view.section})
    return items, dropped


def _boilerplate_answers(results: list[tuple[ChunkView, list[Fact]]], n_docs: int) -> set[str]:
    """An answer found in many documents is boilerplate (a legal notice on every report), whatever the layout."""
    answer_docs: dict[str, set[str]] = {}
    for view, facts in results:
        for fact in facts:
            answer_docs.setdefault(_line_key(fact.answer), set()).add(view.doc)
    return {k for k, docs in answer_docs.items() if n_docs >= 4 and len(docs) >= max(3, 0.25 * n_docs)}


def _fact_defect(fact: Fact, view: ChunkView, config: SynthConfig, boilerplate: set[str]) -> str | None:
    if _line_key(fact.answer) in boilerplate:
        return "boilerplate"
    if not (config.min_answer_chars <= len(fact.answer) <= config.max_answer_chars):
        return "answer_length"
    if support(fact.answer, view.text) < config.min_support:
        return "unsupported"
    return None


def _split_rows(items: list[dict], config: SynthConfig, by_id: dict[str, ChunkView]) -> dict[str, list[dict]]:
    """The rows of each split: test rows as plain questions, training and validation rows as the training
    prompt (with RAFT distractors when configured)."""
    split_of = _assign_splits(items, config)
    rng = random.Random(config.seed + 1)
    train_chunks = sorted({it["chunk_id"] for it in items if split_of[id(it)] == "train"})
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for it in items:
        split = split_of[id(it)]
        base = {k: it[k] for k in ("question", "answer", "doc", "page", "section", "chunk_id", "fact")}
        if split == "test":
            base["messages"] = qa_to_messages(it["question"], it["answer"], config.system_prompt)
            splits["test"].append(base)
            continue
        messages, with_context = _training_messages(it, config, by_id, train_chunks, rng)
        splits[split].append({**base, "context": with_context, "messages": messages})
    return splits


def _assign_splits(items: list[dict], config: SynthConfig) -> dict[int, str]:
    if config.split_by == "chunk":
        groups = _split_groups(list({it["chunk_id"] for it in items}), config)
        return {id(it): next(s for s, keys in groups.items() if it["chunk_id"] in keys) for it in items}
    # paraphrase: every fact is trained on; one wording per fact is held out for test / validation
    facts: dict[str, list[dict]] = {}
    for it in items:
        facts.setdefault(it["fact"], []).append(it)
    rng = random.Random(config.seed)
    out = {}
    for fact_items in facts.values():
        for it in fact_items:
            out[id(it)] = "train"
        if len(fact_items) >= 2:
            held = fact_items[-1]
            r = rng.random()
            if r < config.test_fraction / max(config.test_fraction + config.validation_fraction, 1e-9) or \
                    config.validation_fraction == 0:
                out[id(held)] = "test" if config.test_fraction > 0 else "train"
            else:
                out[id(held)] = "validation"
    return out


def _training_messages(it: dict, config: SynthConfig, by_id: dict[str, ChunkView], train_chunks: list[str],
                       rng: random.Random) -> tuple[list[dict], bool]:
    if config.distractors <= 0:
        return qa_to_messages(it["question"], it["answer"], config.system_prompt), False
    # Distractors come from training chunks only, so held-out text never appears in a training prompt.
    pool = [c for c in train_chunks if c != it["chunk_id"]]
    passages = [by_id[c] for c in rng.sample(pool, min(config.distractors, len(pool)))]
    with_oracle = rng.random() < config.oracle_fraction
    if with_oracle:
        passages.insert(rng.randrange(len(passages) + 1), by_id[it["chunk_id"]])
    numbered = "\n\n".join(f"[{n}] ({p.doc}{f', page {p.page}' if p.page else ''}) {p.text.strip()}"
                           for n, p in enumerate(passages, 1))
    answer = it["answer"]
    if with_oracle:
        n = next(i for i, p in enumerate(passages, 1) if p.chunk_id == it["chunk_id"])
        answer = f"{answer} [{n}]"
    user = f"{CONTEXT_INSTRUCTION}\n\n{numbered}\n\nQuestion: {it['question']}"
    return qa_to_messages(user, answer, config.system_prompt), True
