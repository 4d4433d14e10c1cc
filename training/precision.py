"""Precision and CPU threads by measurement: time a few real training steps, keep the fastest.

bf16 autocast is about twice as fast as fp32 on CPUs with AVX-512 BF16 or AMX and more than ten times
slower on CPUs without them (measured on an AVX2-only EPYC: 3 vs 40 tokens/s), and whether a second
thread helps depends on what else the machine runs. So before a CPU run ``choose_precision`` times
forward + backward + optimizer steps of the model about to be trained, on a batch of the real length,
for fp32 and bf16 autocast at the thread counts worth trying, and returns the fastest with the
measured tokens/s (which the plan's time estimate uses). On a GPU: bf16 where supported, no timing.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ragtune.job_events import PrecisionProbe


@dataclass
class Measurement:
    bf16: bool
    threads: int
    step_s: float | None  # None: stopped early (see `stopped`)
    tokens_per_s: float | None
    stopped: str = ""  # why it was not timed to the end, in words

    @property
    def label(self) -> str:
        return f"{'bf16 autocast' if self.bf16 else 'fp32'}, {self.threads} thread{'s' if self.threads > 1 else ''}"


@dataclass
class PrecisionChoice:
    bf16: bool
    threads: int | None  # None on GPU
    tokens_per_s: float | None  # measured at the chosen setting (None on GPU: not measured)
    reason: str
    measurements: list[Measurement] = field(default_factory=list)
    probe_s: float = 0.0  # seconds the measuring took, model creation included

    @property
    def label(self) -> str:
        return "bf16 mixed precision" if self.bf16 else "fp32"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}

    @classmethod
    def from_dict(cls, d: dict) -> "PrecisionChoice":
        """The choice as ``to_dict`` wrote it (a resumed job reads it back from its plan.json)."""
        return cls(bf16=bool(d["bf16"]), threads=d.get("threads"), tokens_per_s=d.get("tokens_per_s"),
                   reason=d.get("reason"), measurements=[Measurement(**m) for m in d.get("measurements") or []],
                   probe_s=d.get("probe_s") or 0.0)


class _TooSlow(Exception):
    pass


WARM_UP_ALLOWANCE = 3  # the warm-up step may take this many times a timed step's limit
SLOWER = 1.5  # a candidate whose step takes this many times the best step so far is clearly slower
PROBE_SHARE = 0.10  # of the training budget, at most, for the whole probe


def thread_candidates() -> list[int]:
    """All, half and one of the cores this process may use (2 cores: 2 then 1): the likely fastest first,
    so that the candidates after it are held to a tight limit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return sorted({1, max(1, cores // 2), cores}, reverse=True)


def time_steps(model, input_ids, *, bf16: bool, threads: int, steps: int = 2, give_up_after: float | None = None,
               labels=None, deadline: float | None = None, clock: Callable[[], float] = time.perf_counter
               ) -> float | None:
    """Seconds per training step (forward, backward, AdamW) after one warm-up step; None when a timed step
    runs past `give_up_after` seconds, the warm-up step past WARM_UP_ALLOWANCE times that, or the clock
    past `deadline` (the probe's end). The check runs before every layer's forward and backward, so a slow
    precision is stopped mid-step, backward included (the backward of bf16 on an AVX2-only CPU took
    minutes when only the forward was watched). The warm-up pays one-off costs and, on a shared machine, a
    passing stall: held to the timed steps' limit, one stall on 0.5 s steps ruled out a precision 1.4x as
    fast as the one chosen. `labels`: what the loss learns (-100 elsewhere, as in training); default:
    every token. `clock`: seconds, injected by tests."""
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: the step costs what a real one costs, moves nothing
    started, limit = [0.0], [None]

    def check(*_):
        now = clock()
        if (limit[0] is not None and now - started[0] > limit[0]) or (deadline is not None and now > deadline):
            raise _TooSlow()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_pre_hook(check) for m in leaves]

    def check_in_backward(_module, _args, output):
        # A hook on the layer's output runs when backward reaches that layer (a module backward hook would
        # wrap the output in a function that breaks in-place ops after it).
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda _grad: check())

    hooks += [m.register_forward_hook(check_in_backward) for m in leaves if any(True for _ in m.parameters())]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.train()
    try:
        times = []
        for step in range(steps + 1):
            if give_up_after is not None:
                limit[0] = give_up_after * (WARM_UP_ALLOWANCE if step == 0 else 1)
            started[0] = clock()
            with autocast:
                loss = model(input_ids=input_ids, labels=input_ids if labels is None else labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(clock() - started[0])
            check()
        return sum(times[1:]) / steps
    except _TooSlow:
        return None
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        torch.set_num_threads(previous_threads)


def choose_precision(model_factory: Callable[[], object], input_ids, *, bf16: bool | None = None,
                     threads: int | None = None, steps: int = 2, labels=None,
                     prepare_bf16: Callable[[object], None] | None = None,
                     emit: Callable[[PrecisionProbe], None] | None = None, max_seconds: float | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> PrecisionChoice:
    """The fastest of fp32 / bf16 autocast and the thread counts, measured on `model_factory()` (a fresh
    trainable model: LoRA applied) with `input_ids` (batch x sequence length of the run) and `labels`.
    `prepare_bf16(model)` turns the model into what a bf16 run trains (frozen weights stored in bf16)
    before bf16 is timed. A set `bf16` or `threads` is an override: it is not measured against.

    Every candidate after the first is stopped as soon as one step of it takes SLOWER times the best step
    so far, and the whole probe (model creation included) ends at `max_seconds`: candidates not timed by
    then are reported as such, so measuring never eats the training it is for."""
    import torch

    if torch.cuda.is_available():
        use = torch.cuda.is_bf16_supported() if bf16 is None else bf16
        why = "set by the user" if bf16 is not None else ("the GPU supports bf16" if use else "the GPU lacks bf16")
        return PrecisionChoice(bf16=use, threads=None, tokens_per_s=None, reason=why)
    began = clock()
    deadline = None if max_seconds is None else began + max_seconds
    precisions = [False, True] if bf16 is None else [bf16]
    counts = thread_candidates() if threads is None else [threads]
    model = model_factory()
    tokens = input_ids.numel()
    results: list[Measurement] = []
    best: Measurement | None = None
    # fp32 first at every thread count (the safe baseline), then bf16 at the best thread count.
    for use_bf16 in precisions:
        if use_bf16 and prepare_bf16 is not None:
            prepare_bf16(model)  # after fp32 is timed: it does not go back
        for n in (counts if best is None or not use_bf16 else [best.threads]):
            limit = None if best is None else SLOWER * best.step_s
            seconds = time_steps(model, input_ids, bf16=use_bf16, threads=n, steps=steps, give_up_after=limit,
                                 labels=labels, deadline=None if best is None else deadline, clock=clock)
            m = Measurement(use_bf16, n, seconds, round(tokens / seconds, 1) if seconds else None)
            if seconds is None:
                m.stopped = ("the probe's time was used up" if deadline is not None and clock() > deadline
                             else f"over {SLOWER:g}x slower than {best.label}, stopped")
            results.append(m)
            if emit:
                emit(PrecisionProbe(setting=m.label, step_s=None if seconds is None else round(seconds, 3),
                                    tokens_per_s=m.tokens_per_s, stopped=m.stopped))
            if seconds is not None and (best is None or seconds < best.step_s):
                best = m
    del model
    if best is None:  # every candidate ran into the limit: cannot happen for the first one (no limit)
        raise RuntimeError("could not time a training step")
    probe_s = clock() - began
    others = [m for m in results if m is not best]
    if others:
        compared = "; ".join(f"{m.label}: {m.tokens_per_s} tokens/s" if m.tokens_per_s
                             else f"{m.label}: {m.stopped}" for m in others)
        reason = f"measured fastest: {best.label} at {best.tokens_per_s} tokens/s ({compared})"
    else:
        reason = f"set by the user: {best.label}, measured {best.tokens_per_s} tokens/s"
    return PrecisionChoice(bf16=best.bf16, threads=best.threads, tokens_per_s=best.tokens_per_s, reason=reason,
                           measurements=results, probe_s=round(probe_s, 1))


PROBE_LENGTH = 512  # longer sequences are timed at 512 tokens: the cost per token barely grows beyond it


def probe_inputs(tokenizer, rows: list[dict], max_length: int, batch_size: int, answers_only: bool = True):
    """(input_ids, labels): a batch of real training tokens at the run's batch size and sequence length (up to
    PROBE_LENGTH, so that timing a slow precision on a slow CPU does not take minutes). With `answers_only`
    the labels learn the answers only (-100 on the prompts), as assistant-only training does, so the probe
    pays for the LM head on as many positions as training does."""
    import torch

    max_length = min(max_length, PROBE_LENGTH)
    ids: list[int] = []
    learned: list[bool] = []
    for row in rows[:2000]:
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=True, return_dict=False,
                                               add_generation_prompt=True)
        ids += full
        learned += [not answers_only or i >= len(prompt) for i in range(len(full))]
        if len(ids) >= max_length * batch_size:
            break
    need = max_length * batch_size
    repeat = need // max(len(ids), 1) + 1
    ids, learned = (ids * repeat)[:need], (learned * repeat)[:need]
    input_ids = torch.tensor(ids, dtype=torch.long).view(batch_size, max_length)
    labels = torch.where(torch.tensor(learned).view(batch_size, max_length), input_ids, -100)
    return input_ids, labels
