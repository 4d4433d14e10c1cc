"""The two token rates of a Generation: decode (after the first token) and end to end (the whole request)."""

from __future__ import annotations

import pytest

from serving.engine import Generation, decode_tokens_per_s, e2e_tokens_per_s


def _generation(completion_tokens: int, ttft_s: float | None, latency_s: float) -> Generation:
    return Generation(text="x", prompt_tokens=7, completion_tokens=completion_tokens, ttft_s=ttft_s,
                      latency_s=latency_s, finish_reason="stop")


def test_decode_rate_counts_the_tokens_after_the_first_over_the_time_after_it():
    g = _generation(completion_tokens=11, ttft_s=0.5, latency_s=2.5)
    assert g.decode_tokens_per_s == pytest.approx(10 / 2.0)  # the prompt's processing (0.5 s) left out
    assert g.e2e_tokens_per_s == pytest.approx(11 / 2.5)  # what the caller waited for, first token included
    assert g.to_dict()["decode_tokens_per_s"] == g.decode_tokens_per_s
    assert g.to_dict()["e2e_tokens_per_s"] == g.e2e_tokens_per_s
    assert "tokens_per_s" not in g.to_dict()


def test_a_rate_that_is_not_defined_is_none_not_zero():
    one = _generation(completion_tokens=1, ttft_s=0.5, latency_s=0.5)
    assert one.decode_tokens_per_s is None and one.e2e_tokens_per_s == pytest.approx(2.0)
    none = _generation(completion_tokens=0, ttft_s=None, latency_s=0.3)
    assert none.decode_tokens_per_s is None and none.e2e_tokens_per_s is None
    # No first token recorded: the whole request counts as decoding.
    assert decode_tokens_per_s(5, None, 2.0) == pytest.approx(2.0)
    assert e2e_tokens_per_s(5, 0.0) is None
