"""Precision by measurement and the plan of a run: which rows fit a time budget, what is left out, what is refused."""

from __future__ import annotations

import json

import pytest

from ragtune.errors import BadInputError
from ragtune.jobs import JobReporter, read_log
from ragtune.models import resolve_llm
from training.callbacks import BudgetGuard, make_callbacks
from training.config import defaults_for
from training.plan import MIN_EVAL_ROWS, TRAINER_OVERHEAD, make_plan, useful_order
from training.precision import (WARM_UP_ALLOWANCE, Measurement, PrecisionChoice, choose_precision, probe_inputs,
                                time_steps)
from training.trainer import method_label, trainable_model

pytestmark = pytest.mark.timeout(300)


class FakeClock:
    """Seconds that move only when a test says so: timing logic under test sees what the test decides, not
    what a busy machine happens to do."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _slowed(clock: FakeClock, slow_when_bf16: bool, seconds: float = 0.02, fast_seconds: float = 0.001,
            backward_seconds: float = 0.0):
    """A tiny trainable model on which every layer's forward costs `seconds` of `clock` in the precision
    under test that is the slow one (`fast_seconds` in the other), and its backward `backward_seconds`."""
    import torch

    config = defaults_for("tiny-llama", "lora")
    model = trainable_model(resolve_llm("tiny-llama", progress=False).path, config)

    def forward_cost(*_):
        clock.advance(seconds if torch.is_autocast_enabled("cpu") == slow_when_bf16 else fast_seconds)

    def backward_cost(_module, _args, output):
        slow = torch.is_autocast_enabled("cpu") == slow_when_bf16
        if slow and backward_seconds and output.requires_grad:
            output.register_hook(lambda _grad: clock.advance(backward_seconds))

    for module in model.modules():
        if not list(module.children()):
            module.register_forward_pre_hook(forward_cost)
            if any(True for _ in module.parameters()):
                module.register_forward_hook(backward_cost)
    return model


def _batch():
    import torch

    return torch.randint(3, 200, (2, 64))


@pytest.mark.parametrize("slow_bf16", [True, False])
def test_the_precision_chooser_picks_the_faster_one_when_the_other_is_made_slower(slow_bf16):
    logged, clock = [], FakeClock()
    choice = choose_precision(lambda: _slowed(clock, slow_when_bf16=slow_bf16), _batch(), threads=1,
                              emit=logged.append, clock=clock)
    assert choice.bf16 is (not slow_bf16)
    assert choice.threads == 1 and choice.tokens_per_s > 0
    assert [e.setting for e in logged] == ["fp32, 1 thread", "bf16 autocast, 1 thread"]
    winner, loser = ("fp32", "bf16 autocast") if slow_bf16 else ("bf16 autocast", "fp32")
    assert choice.reason.startswith(f"measured fastest: {winner}, 1 thread")
    assert f"({loser}, 1 thread: " in choice.reason  # the loser is named, with its speed or as stopped


def test_a_much_slower_precision_is_given_up_mid_step():
    clock = FakeClock()
    model = _slowed(clock, slow_when_bf16=True, seconds=0.2)
    fast = time_steps(model, _batch(), bf16=False, threads=1, steps=1, clock=clock)
    started = clock()
    assert time_steps(model, _batch(), bf16=True, threads=1, steps=1, give_up_after=2 * fast, clock=clock) is None
    # Stopped at the first layer past its limit: the warm-up step's limit (3 x 2 x fast) plus one layer.
    assert clock() - started <= WARM_UP_ALLOWANCE * 2 * fast + 0.2 + 1e-9


def test_a_precision_slow_only_in_backward_is_stopped_in_the_backward():
    """The forward is as fast as fp32's; the backward of each layer costs 5 s. Watching the forward alone
    sat through every layer's backward (the bf16 candidate on an AVX2-only CPU ran 333 s that way)."""
    clock = FakeClock()
    model = _slowed(clock, slow_when_bf16=True, seconds=0.001, backward_seconds=5.0)
    fast = time_steps(model, _batch(), bf16=False, threads=1, steps=1, clock=clock)
    started = clock()
    assert time_steps(model, _batch(), bf16=True, threads=1, steps=1, give_up_after=1.5 * fast, clock=clock) is None
    assert clock() - started <= 5.0 + 1.0  # one layer's backward, not all of them


def test_the_whole_probe_ends_at_its_share_of_the_budget_and_says_so():
    """Every candidate is 1.2x the best (never 'clearly slower'), each step costs seconds: the probe stops
    at max_seconds, keeps the best timed so far and names what it did not time."""
    import torch

    clock = FakeClock()
    model = _slowed(clock, slow_when_bf16=True, seconds=0.012, fast_seconds=0.010)
    before = clock()
    time_steps(model, _batch(), bf16=False, threads=1, steps=1, clock=clock)
    fp32_cost = clock() - before  # the first candidate (warm-up + one step) always runs to the end
    logged = []
    budget = 1.5 * fp32_cost  # room for half of the bf16 candidate
    choice = choose_precision(lambda: model, _batch(), threads=1, steps=1, max_seconds=budget, clock=clock,
                              emit=logged.append)
    assert choice.bf16 is False and choice.measurements[0].step_s > 0
    assert budget - 0.05 <= choice.probe_s <= budget + 0.05  # stopped within a layer of the end (rounded to 0.1 s)
    assert logged[-1].stopped == "the probe's time was used up"
    assert "bf16 autocast, 1 thread: the probe's time was used up" in choice.reason
    assert torch.get_num_threads() >= 1


def test_a_stall_in_the_warm_up_step_does_not_rule_out_the_faster_precision():
    """fp32 is slowed on every step; bf16 is fast but its first step stalls once for longer than 1.5x an
    fp32 step (one-off costs, or another process taking the core for a moment)."""
    import torch

    clock = FakeClock()
    model = _slowed(clock, slow_when_bf16=False, seconds=0.004)
    stalled = []

    def stall_once(*_):
        if torch.is_autocast_enabled("cpu") and not stalled:
            stalled.append(True)
            clock.advance(1.0)

    model.register_forward_pre_hook(stall_once)
    fp32_step = time_steps(model, _batch(), bf16=False, threads=1, steps=1, clock=clock)
    assert 1.0 > 1.5 * fp32_step  # the stall alone is past the timed steps' limit
    choice = choose_precision(lambda: model, _batch(), threads=1, steps=1, clock=clock)
    assert stalled and choice.bf16 is True, choice.reason


def test_set_flags_are_overrides_not_candidates():
    logged = []
    choice = choose_precision(lambda: _slowed(FakeClock(), slow_when_bf16=True), _batch(), bf16=True, threads=1,
                              emit=logged.append)
    assert choice.bf16 is True and [e.setting for e in logged] == ["bf16 autocast, 1 thread"]
    assert choice.reason.startswith("set by the user")


def test_method_labels_name_the_precision_that_ran():
    assert method_label("lora", False) == "LoRA, fp32"
    assert method_label("lora", True) == "LoRA, bf16 mixed precision"
    assert "fp32" in method_label("full", False) and "bf16" not in method_label("full", False)
    assert method_label("qlora", False).startswith("QLoRA (4-bit NF4")


def test_probe_inputs_are_real_tokens_at_the_run_length():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_llm("tiny-llama", progress=False).path)
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}]
    batch = probe_inputs(tok, rows, 128, 2)[0]
    assert tuple(batch.shape) == (2, 128)


# ------------------------------------------------------------------ plan

def _meta(n_docs=3, facts_per_doc=10, wordings=2):
    meta = []
    for d in range(n_docs):
        for f in range(facts_per_doc):
            answer = f"Doc {d} fact {f} holds {100 + f} items." if f % 2 == 0 else f"Doc {d} fact {f} is green."
            for w in range(wordings):
                meta.append({"question": f"q{w} about {d}/{f}?", "answer": answer, "fact": f"{d}#{f}",
                             "doc": f"doc{d}.pdf"})
    return meta


def _plan(meta, budget_s, tokens_per_s=100.0, epochs=2.0, val=None, setup_s=0.0):
    return make_plan(meta, [50] * len(meta), val or [], epochs=epochs, max_length=256, batch_size=1, grad_accum=1,
                     tokens_per_s=tokens_per_s, budget_s=budget_s, setup_s=setup_s, eval_each_epoch=True)


def test_without_a_budget_every_row_is_kept_and_the_estimate_is_tokens_over_speed():
    meta = _meta()
    plan = _plan(meta, None)
    assert plan.rows == plan.rows_total == 60 and plan.left_out == {}
    assert plan.train_s == pytest.approx(60 * 50 * 2 / (100.0 / TRAINER_OVERHEAD))
    assert plan.steps == 2 * 12  # 60 rows of 50 tokens, five to a 256-token pack, two epochs


def test_a_budget_keeps_whole_fact_bearing_facts_spread_over_documents_and_says_what_was_left_out():
    meta = _meta()
    plan = _plan(meta, budget_s=60.0)  # room for about 22 rows at 2 epochs
    kept = [meta[i] for i in plan.kept]
    assert 16 <= plan.rows < 60 and plan.rows % 2 == 0
    facts = {m["fact"] for m in kept}
    assert all(sum(m["fact"] == f for m in kept) == 2 for f in facts)  # every wording of a kept fact
    assert all(any(ch.isdigit() for ch in m["answer"].split("holds")[-1]) for m in kept)  # numbers first
    assert {m["doc"] for m in kept} == {"doc0.pdf", "doc1.pdf", "doc2.pdf"}  # spread over the documents
    assert plan.left_out["rows"] == 60 - plan.rows and plan.left_out["reason"] == "time budget"
    assert plan.total_s <= 60.0
    assert "of 60 rows" in plan.summary()


def test_duplicates_are_dropped_and_reported():
    meta = _meta(n_docs=1, facts_per_doc=4)
    meta.append(dict(meta[0]))  # the same question and answer again
    groups = useful_order(meta)
    assert sum(len(g) for g in groups) == 8
    assert _plan(meta, None).left_out == {"duplicates": 1}


def test_a_budget_that_fits_nothing_useful_is_refused_before_training():
    with pytest.raises(BadInputError, match="No useful training fits in the time budget"):
        _plan(_meta(), budget_s=20.0, tokens_per_s=5.0)
    with pytest.raises(BadInputError, match="used up before training starts"):
        _plan(_meta(), budget_s=30.0, setup_s=60.0)


def test_validation_is_a_sample_and_is_skipped_when_the_budget_is_tight():
    meta = _meta()
    roomy = _plan(meta, budget_s=None, val=[50] * 500)
    assert 0 < roomy.eval_rows <= 64
    tight = _plan(meta, budget_s=60.0, val=[200] * 500)
    assert tight.eval_rows == 0 and "validation skipped" in tight.note
    few = _plan(meta, budget_s=600.0, val=[50] * (MIN_EVAL_ROWS - 2))
    assert few.eval_rows == MIN_EVAL_ROWS - 2  # a small validation split is used whole


def test_the_default_budget_is_20_minutes_on_cpu_and_none_on_a_gpu():
    config = defaults_for("tiny-llama", "lora")
    assert config.budget_seconds(on_gpu=False) == 1200 and config.budget_seconds(on_gpu=True) is None
    assert defaults_for("tiny-llama", "lora", time_budget=0).budget_seconds(on_gpu=False) is None
    assert defaults_for("tiny-llama", "lora", time_budget=5).budget_seconds(on_gpu=True) == 300
    with pytest.raises(BadInputError):
        defaults_for("tiny-llama", "lora", time_budget=-1)


def test_training_stops_at_the_budget_deadline_when_steps_run_slower_than_planned(tmp_path):
    from transformers import TrainerControl, TrainerState

    clock = FakeClock()
    with JobReporter(tmp_path) as reporter:
        guard = BudgetGuard(reporter, deadline=clock() + 0.5, clock=clock)
        state, control = TrainerState(global_step=0, max_steps=100), TrainerControl()
        guard.on_train_begin(None, state, control)
        for step in range(1, 100):
            clock.advance(0.1)  # a "step"
            state.global_step = step
            guard.on_step_end(None, state, control)
            if control.should_training_stop:
                break
    # After step 4 (0.4 s) a fifth 0.1 s step would end at the deadline's edge: 4 or 5 by rounding, never more.
    assert control.should_training_stop and 4 <= state.global_step <= 5
    stops = [r for r in read_log(tmp_path / "log.jsonl")[0] if r.get("event") == "budget_stop"]
    assert stops and stops[0]["step"] == state.global_step and "time budget" in stops[0]["message"]


def test_a_precision_choice_reads_back_as_a_resume_finds_it():
    choice = PrecisionChoice(bf16=True, threads=2, tokens_per_s=88.5, reason="measured fastest", probe_s=3.2,
                             measurements=[Measurement(False, 2, 0.9, 49.1),
                                           Measurement(True, 2, 0.5, 88.5), Measurement(True, 1, None, None, "slower")])
    assert PrecisionChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice


def test_a_cancel_at_the_end_of_a_step_saves_and_stops_before_the_budget_guard_speaks(tmp_path):
    from transformers import TrainerControl, TrainerState

    clock = FakeClock()
    with JobReporter(tmp_path) as reporter:
        callbacks = make_callbacks(reporter, defaults_for("tiny-llama", "lora"), 0.0, deadline=clock() + 0.5,
                                   clock=clock)
        state, control = TrainerState(global_step=0, max_steps=100), TrainerControl()
        for callback in callbacks:
            callback.on_train_begin(None, state, control)
        clock.advance(10.0)  # a step that ran far past the deadline
        (tmp_path / "CANCEL").touch()
        state.global_step = 1
        for callback in callbacks:
            callback.on_step_end(None, state, control)
    assert callbacks[0].cancelled and control.should_save and control.should_training_stop
    events = [r.get("event") for r in read_log(tmp_path / "log.jsonl")[0]]
    assert "train_begin" in events and "budget_stop" not in events
