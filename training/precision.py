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


@dataclass
class Measurement:
    bf16: bool
    threads: int
    step_s: float | None  # None: stopped early, already slower than the best
    tokens_per_s: float | None

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

    @property
    def label(self) -> str:
        return "bf16 mixed precision" if self.bf16 else "fp32"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


class _TooSlow(Exception):
    pass


WARM_UP_ALLOWANCE = 3  # the warm-up step may take this many times a timed step's limit


def thread_candidates() -> list[int]:
    """1, half and all of the cores this process may use (2 cores: 1 and 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return sorted({1, max(1, cores // 2), cores})


def time_steps(model, input_ids, *, bf16: bool, threads: int, steps: int = 2, give_up_after: float | None = None,
               labels=None) -> float | None:
    """Seconds per training step (forward, backward, AdamW) after one warm-up step; None when a timed step
    runs past `give_up_after` seconds, or the warm-up step past WARM_UP_ALLOWANCE times that (stopped
    mid-step, so a very slow precision costs little to rule out). The warm-up pays one-off costs and, on a
    shared machine, a passing stall: held to the timed steps' limit, one stall on 0.5 s steps ruled out a
    precision 1.4x as fast as the one chosen. `labels`: what the loss learns (-100 elsewhere, as in
    training); default: every token."""
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: the step costs what a real one costs, moves nothing
    started, limit = [0.0], [None]

    def deadline(*_):
        if limit[0] is not None and time.perf_counter() - started[0] > limit[0]:
            raise _TooSlow()

    hooks = [m.register_forward_pre_hook(deadline) for m in model.modules() if not list(m.children())]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.train()
    try:
        times = []
        for step in range(steps + 1):
            if give_up_after is not None:
                limit[0] = give_up_after * (WARM_UP_ALLOWANCE if step == 0 else 1)
            started[0] = time.perf_counter()
            with autocast:
                loss = model(input_ids=input_ids, labels=input_ids if labels is None else labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - started[0])
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
                     log: Callable[..., None] | None = None) -> PrecisionChoice:
    """The fastest of fp32 / bf16 autocast and the thread counts, measured on `model_factory()` (a fresh
    trainable model: LoRA applied) with `input_ids` (batch x sequence length of the run) and `labels`.
    `prepare_bf16(model)` turns the model into what a bf16 run trains (frozen weights stored in bf16)
    before bf16 is timed. A set `bf16` or `threads` is an override: it is not measured against."""
    import torch

    if torch.cuda.is_available():
        use = torch.cuda.is_bf16_supported() if bf16 is None else bf16
        why = "set by the user" if bf16 is not None else ("the GPU supports bf16" if use else "the GPU lacks bf16")
        return PrecisionChoice(bf16=use, threads=None, tokens_per_s=None, reason=why)
    precisions = [False, True] if bf16 is None else [bf16]
    counts = thread_candidates() if threads is None else [threads]
    model = model_factory()
    tokens = input_ids.numel()
    results: list[Measurement] = []
    best: Measurement | None = None
    # fp32 first at every thread count (the safe baseline), then bf16 at the best thread count, given up
    # as soon as it is clearly slower.
    for use_bf16 in precisions:
        if use_bf16 and prepare_bf16 is not None:
            prepare_bf16(model)  # after fp32 is timed: it does not go back
        for n in (counts if best is None or not use_bf16 else [best.threads]):
            limit = None if best is None else 1.5 * best.step_s
            seconds = time_steps(model, input_ids, bf16=use_bf16, threads=n, steps=steps, give_up_after=limit,
                                 labels=labels)
            m = Measurement(use_bf16, n, seconds, round(tokens / seconds, 1) if seconds else None)
            results.append(m)
            if log:
                log(event="precision_probe", setting=m.label, step_s=None if seconds is None else round(seconds, 3),
                    tokens_per_s=m.tokens_per_s)
            if seconds is not None and (best is None or seconds < best.step_s):
                best = m
    del model
    if best is None:  # every candidate ran into the limit: cannot happen for the first one (no limit)
        raise RuntimeError("could not time a training step")
    others = [m for m in results if m is not best]
    if others:
        compared = "; ".join(f"{m.label}: {m.tokens_per_s} tokens/s" if m.tokens_per_s
                             else f"{m.label}: over 1.5x slower, stopped" for m in others)
        reason = f"measured fastest: {best.label} at {best.tokens_per_s} tokens/s ({compared})"
    else:
        reason = f"set by the user: {best.label}, measured {best.tokens_per_s} tokens/s"
    return PrecisionChoice(bf16=best.bf16, threads=best.threads, tokens_per_s=best.tokens_per_s, reason=reason,
                           measurements=results)
