"""The embedded engine (transformers + peft in process) on the tiny model."""

from __future__ import annotations

import threading

import pytest

from ragtune.errors import BadInputError
from ragtune.models import resolve_llm
from serving.embedded import AnswerFrequencyPenalty, EmbeddedEngine, IncrementalDecoder
from serving.engine import Generation, SamplingOptions, StopTextFilter
from serving.factory import get_engine
from serving.vllm_engine import VLLMEngine

Q = [{"role": "user", "content": "What does the K7 robot carry?"}]


def test_greedy_generation_is_repeatable_and_streams_the_same_text(tiny_engine):
    options = SamplingOptions(max_tokens=12)
    first = tiny_engine.generate(Q, options)
    second = tiny_engine.generate(Q, options)
    assert first.text == second.text and first.text
    assert first.prompt_tokens == len(tiny_engine.prompt_ids(Q))
    assert first.completion_tokens == 12 and first.finish_reason == "length"
    assert first.ttft_s is not None and 0 < first.ttft_s <= first.latency_s
    assert first.decode_tokens_per_s == pytest.approx(11 / (first.latency_s - first.ttft_s))
    assert first.e2e_tokens_per_s == pytest.approx(12 / first.latency_s)

    items = list(tiny_engine.stream(Q, options))
    assert isinstance(items[-1], Generation)
    deltas = items[:-1]
    assert all(isinstance(d, str) for d in deltas) and len(deltas) > 1
    assert "".join(deltas) == items[-1].text == first.text


def test_the_frequency_penalty_counts_the_answers_own_tokens(tiny_engine):
    """A penalty on the answer's own repeats changes a greedy answer once a token would come back; a zero
    penalty is the plain greedy answer; the arithmetic is OpenAI's (and vLLM's), on the answer's tokens."""
    msgs = [{"role": "user", "content": "Say something."}]
    plain = tiny_engine.generate(msgs, SamplingOptions(max_tokens=40))
    penalised = tiny_engine.generate(msgs, SamplingOptions(max_tokens=40, frequency_penalty=2.0))
    assert tiny_engine.generate(msgs, SamplingOptions(max_tokens=40, frequency_penalty=0.0)).text == plain.text
    assert penalised.text != plain.text and penalised.completion_tokens == plain.completion_tokens == 40
    # The prompt's tokens (the first three) are not counted: only the answer's own.
    import torch  # heavy: loaded by the engine already

    scores = torch.zeros(1, 8)
    out = AnswerFrequencyPenalty(n_prompt=3, penalty=0.5)(torch.tensor([[5, 5, 5, 2, 2, 7]]), scores)
    assert out[0].tolist() == [0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -0.5]
    with pytest.raises(BadInputError, match="frequency_penalty"):
        SamplingOptions(frequency_penalty=3.0)


def test_repetition_controls_are_checked_and_off_by_default():
    default = SamplingOptions()
    assert default.repetition_penalty == 1.0 and default.no_repeat_ngram_size == 0
    for bad in ({"repetition_penalty": 0.0}, {"repetition_penalty": 2.5}, {"no_repeat_ngram_size": -1},
                {"no_repeat_ngram_size": 2.5}, {"no_repeat_ngram_size": True}):
        with pytest.raises(BadInputError, match=next(iter(bad))):
            SamplingOptions(**bad)


def test_vllm_refuses_n_gram_blocking_it_does_not_have():
    engine = VLLMEngine.__new__(VLLMEngine)  # no server: the request is refused before one is needed
    with pytest.raises(BadInputError, match="no_repeat_ngram_size"):
        next(engine.stream(Q, SamplingOptions(no_repeat_ngram_size=3)))


@pytest.mark.slow
def test_repetition_penalty_and_n_gram_blocking_stop_gemma_quoting_the_passage():
    """Both controls count the prompt's tokens, unlike the frequency penalty: asked to quote a passage, Gemma
    quotes it greedily and with the default frequency penalty, but not with n-gram blocking (no 3 tokens of
    the prompt again; it answered "building 4", then "building three") nor with a repetition penalty of 1.3
    (it answered "passageway, 10th floor of Building Four")."""
    engine = get_engine("embedded", model="gemma-3-270m")
    msgs = [{"role": "user", "content": "Passage: The night shift starts at ten and the badge office is in building "
                                        "four.\n\nQuestion: Where is the badge office? Answer by quoting the passage."}]
    quote = "the badge office is in building four"

    def answer(**kw):
        return engine.generate(msgs, SamplingOptions(max_tokens=30, **kw)).text

    plain = answer(frequency_penalty=0)
    assert quote in plain and quote in answer()  # the default (frequency penalty 0.6) quotes it too
    assert answer(frequency_penalty=0, repetition_penalty=1.0) == plain
    blocked, penalised = answer(frequency_penalty=0, no_repeat_ngram_size=3), answer(frequency_penalty=0,
                                                                                     repetition_penalty=1.3)
    for text in (blocked, penalised):
        assert "building four" not in text and text != plain


def test_sampling_with_a_seed_is_reproducible(tiny_engine):
    options = SamplingOptions(max_tokens=12, temperature=1.0, seed=7)
    assert tiny_engine.generate(Q, options).text == tiny_engine.generate(Q, options).text
    greedy = tiny_engine.generate(Q, SamplingOptions(max_tokens=12)).text
    sampled = {tiny_engine.generate(Q, SamplingOptions(max_tokens=12, temperature=1.5, seed=s)).text for s in range(3)}
    assert sampled - {greedy}


def test_stop_string_cuts_the_answer_before_it(tiny_engine):
    full = tiny_engine.generate(Q, SamplingOptions(max_tokens=16)).text
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = tiny_engine.generate(Q, SamplingOptions(max_tokens=16, stop=[stop]))
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"
    assert "".join(x for x in tiny_engine.stream(Q, SamplingOptions(max_tokens=16, stop=[stop]))
                   if isinstance(x, str)) == cut.text


def test_stop_filter_never_leaks_a_partial_stop_string():
    f = StopTextFilter(["END"])
    out = "".join(f.feed(piece) for piece in ["ab", "cE", "N", "Dxyz"]) + f.flush()
    assert out == "abc" and f.stopped


def test_over_long_prompt_is_refused_and_the_engine_keeps_answering(tiny_engine):
    long_question = [{"role": "user", "content": "robot " * (tiny_engine.max_model_len + 50)}]
    with pytest.raises(BadInputError, match="accepts at most"):
        tiny_engine.generate(long_question)
    with pytest.raises(BadInputError, match="accepts at most"):
        tiny_engine.stream(long_question)
    assert tiny_engine.generate(Q, SamplingOptions(max_tokens=3)).completion_tokens == 3


def test_answer_is_capped_by_what_is_left_of_the_window(tiny_llm):
    engine = EmbeddedEngine("tiny-llama", max_model_len=40)
    n_prompt = len(engine.prompt_ids(Q))
    g = engine.generate(Q, SamplingOptions(max_tokens=100))
    assert g.prompt_tokens + g.completion_tokens <= 40
    assert g.finish_reason == "stop" or g.completion_tokens == 40 - n_prompt


def test_malformed_messages_get_clear_errors(tiny_engine):
    for bad, match in (([], "at least one"), ([{"role": "robot", "content": "x"}], "role"),
                       ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message"),
                       ([{"role": "user", "content": None}], "no text")):
        with pytest.raises(BadInputError, match=match):
            tiny_engine.generate(bad)
    with pytest.raises(BadInputError):
        SamplingOptions(max_tokens=0)


def test_lora_adapter_loads_by_name_and_switches_per_request(tiny_engine, tiny_fact_lora, facts):
    question, answer = facts[0]
    msgs = [{"role": "user", "content": question}]
    options = SamplingOptions(max_tokens=24)
    before = tiny_engine.generate(msgs, options).text
    tiny_engine.load_adapter("facts-embedded", tiny_fact_lora)
    try:
        assert "facts-embedded" in tiny_engine.adapters()
        tuned = tiny_engine.generate(msgs, options, adapter="facts-embedded")
        assert tuned.text == answer and tuned.finish_reason == "stop"
        # The base model still answers as before while the adapter is loaded.
        assert tiny_engine.generate(msgs, options).text == before != answer
        with pytest.raises(BadInputError, match="Unknown adapter 'nope'"):
            tiny_engine.generate(msgs, options, adapter="nope")
    finally:
        tiny_engine.unload_adapter("facts-embedded")
    assert "facts-embedded" not in tiny_engine.adapters()
    with pytest.raises(BadInputError, match="Unknown adapter"):
        tiny_engine.generate(msgs, options, adapter="facts-embedded")


def test_loading_a_folder_without_an_adapter_is_refused(tiny_engine, tmp_path):
    with pytest.raises(BadInputError, match="adapter_config.json"):
        tiny_engine.load_adapter("empty", tmp_path)


def test_concurrent_requests_each_get_their_own_answer(tiny_engine):
    prompts = [[{"role": "user", "content": f"Question number {i} about pallets?"}] for i in range(4)]
    options = SamplingOptions(max_tokens=10)
    expected = [tiny_engine.generate(p, options).text for p in prompts]
    got: dict[int, str] = {}

    def ask(i):
        got[i] = tiny_engine.generate(prompts[i], options).text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [got[i] for i in range(4)] == expected


def test_an_abandoned_stream_frees_the_engine(tiny_engine):
    stream = tiny_engine.stream(Q, SamplingOptions(max_tokens=200))
    assert isinstance(next(stream), str)
    stream.close()
    done = threading.Event()
    threading.Thread(target=lambda: (tiny_engine.generate(Q, SamplingOptions(max_tokens=2)), done.set()),
                     daemon=True).start()
    assert done.wait(60), "the engine stayed locked after a client stopped reading"


@pytest.mark.parametrize("model", ["tiny-llama", "gemma-3-270m"])
def test_incremental_decoding_gives_the_text_of_a_full_decode(model):
    from transformers import AutoTokenizer  # heavy: this test's own tokenizers

    tokenizer = AutoTokenizer.from_pretrained(resolve_llm(model, progress=False).path)
    text = ("The K7 carries 120 kg.  Naïve café, 日本語のテキスト, emoji 🤖🚀 and\nnew lines,\ttabs, "
            "  leading spaces and the end.")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(t) for t in ids]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert sum(1 for d in deltas if d) > len(ids) // 2  # streamed token by token, not at the end
