"""What a training job adds to the trainer's loop, one callback per concern: a requested cancel stops at the
end of a step, the time budget stops before a step that would end past it, each logged step becomes an event
of the job's log, and early stopping ends a run whose validation loss no longer improves.

This module subclasses transformers' ``TrainerCallback``, so it imports transformers: ``training.run`` loads
it only when a run builds its trainer.
"""

from __future__ import annotations

import time
from typing import Callable

from transformers import TrainerCallback

from ragtune.job_events import BudgetStop, EarlyStop, ProgressMeter, TrainingBegan, TrainingEnded, TrainingStep
from ragtune.jobs import CancelWatcher, JobReporter

from .config import TrainConfig
from .trainer import memory_mb


class CancelAtStepEnd(TrainerCallback):
    """A requested cancel (the CANCEL file) saves where the run is and stops: a resume continues from this very
    step. With several ranks every rank stops at the same step, or the others wait forever in a collective."""

    def __init__(self, watcher: CancelWatcher | None):
        self.watcher = watcher
        self.accelerator = None  # set once the trainer exists: ranks agree through it
        self.cancelled = False

    def on_train_begin(self, args, state, control, **kw):
        self.cancelled = False

    def on_step_end(self, args, state, control, **kw):
        requested = bool(self.watcher and self.watcher.cancel_requested)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            import torch

            flag = torch.tensor([float(requested)], device=self.accelerator.device)
            requested = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        if requested:
            self.cancelled = True
            control.should_save = True
            control.should_training_stop = True


class BudgetGuard(TrainerCallback):
    """Stops before a step that would end past `deadline` (a `clock()` reading): the last moment a step may end
    so that the job, evaluation and saving included, stays within its time budget when the machine turns out
    slower than measured. `clock` is injected by tests."""

    def __init__(self, reporter: JobReporter | None, deadline: float, clock: Callable[[], float] = time.time):
        self.reporter, self.deadline, self.clock = reporter, deadline, clock

    def on_train_begin(self, args, state, control, **kw):
        self.t0, self.step0 = self.clock(), state.global_step

    def on_step_end(self, args, state, control, **kw):
        if control.should_training_stop or state.global_step >= state.max_steps:
            return  # already stopping: the last step, or a cancel
        steps = state.global_step - self.step0
        per_step = (self.clock() - self.t0) / steps if steps > 0 else 0.0
        if self.clock() + per_step <= self.deadline:
            return
        control.should_training_stop = True
        if self.reporter:
            self.reporter.emit(BudgetStop(step=state.global_step, total_steps=state.max_steps,
                                          message=f"stopped after {state.global_step} of {state.max_steps} steps "
                                                  "to stay within the time budget: the machine ran slower than "
                                                  "measured"))


class StepLog(TrainerCallback):
    """The trainer's logs as the job's events: a TrainingStep per logged step, with speed, memory and ETA, and
    TrainingEnded with the trainer's summary at the end. `elapsed_before`: the training time of the runs this
    one resumes."""

    def __init__(self, reporter: JobReporter | None, elapsed_before: float = 0.0,
                 clock: Callable[[], float] = time.time):
        self.reporter, self.clock = reporter, clock
        self.meter = ProgressMeter(clock, elapsed_before)  # the rate and ETA every job reports

    def on_train_begin(self, args, state, control, **kw):
        self.meter.restart(state.global_step)  # counted from here: loading and the precision probe are not steps
        self.tokens0 = state.num_input_tokens_seen
        if self.reporter:
            self.reporter.emit(TrainingBegan(step=state.global_step, total_steps=state.max_steps,
                                             resumed_from_step=state.global_step or None))

    def on_log(self, args, state, control, logs=None, **kw):
        if not self.reporter or not logs or not state.is_world_process_zero:
            return
        step = self._step(state, logs)
        if "train_loss" in logs:  # the trainer's summary at the very end
            self.reporter.emit(TrainingEnded(**step, train_loss=logs["train_loss"],
                                             train_runtime=logs.get("train_runtime")))
        elif step["loss"] is not None or step["eval_loss"] is not None:
            self.reporter.emit(TrainingStep(**step))

    def _step(self, state, logs: dict) -> dict:
        """The fields of a step's event, from the trainer's state and its logs of that step."""
        progress = self.meter.reading(state.global_step, state.max_steps)
        elapsed = self.clock() - self.meter.started
        current, peak = memory_mb()
        return {
            "step": progress.step, "total_steps": progress.total_steps, "elapsed_s": progress.elapsed_s,
            "rate": progress.rate, "eta_s": progress.eta_s, "epoch": round(state.epoch or 0.0, 4),
            "loss": logs.get("loss"), "eval_loss": logs.get("eval_loss"),
            "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
            "tokens_per_s": round((state.num_input_tokens_seen - self.tokens0) / elapsed, 1) if elapsed > 0 else None,
            "memory_mb": round(current, 1), "peak_memory_mb": round(peak, 1),
        }


class EarlyStopping(TrainerCallback):
    """Stops once the validation loss has not improved for `patience` evaluations in a row."""

    def __init__(self, patience: int, reporter: JobReporter | None = None):
        self.patience, self.reporter, self.best, self.bad = patience, reporter, None, 0

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if self.best is None or loss < self.best - 1e-4:
            self.best, self.bad = loss, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True
            if self.reporter:
                self.reporter.emit(EarlyStop(step=state.global_step, best_eval_loss=self.best))


def make_callbacks(reporter: JobReporter | None, config: TrainConfig, elapsed_before: float,
                   deadline: float | None = None, clock: Callable[[], float] = time.time) -> list[TrainerCallback]:
    """A job's callbacks, the cancel first (its ``accelerator`` is set once the trainer exists, and its
    ``cancelled`` says whether the run stopped for a cancel); the budget guard only with a `deadline`."""
    callbacks: list[TrainerCallback] = [CancelAtStepEnd(reporter)]
    if deadline is not None:
        callbacks.append(BudgetGuard(reporter, deadline, clock))
    callbacks.append(StepLog(reporter, elapsed_before, clock))
    if config.early_stopping_patience:
        callbacks.append(EarlyStopping(config.early_stopping_patience, reporter))
    return callbacks
