"""Job logs as typed events: what writers put in log.jsonl reads back as the same event, older rows included,
and the one rate/ETA computation counts from the work this process did (a resumed job's rate stays true)."""

import json

from ragtune.job_events import (CheckpointSaved, Ended, FileIngested, JobEvent, JobProgress, JobWarning,
                                OperationStarted, PlanMade, PrecisionChosen, Progress, ProgressMeter, TrainingStarted,
                                TrainingStep, parse_event, read_events)
from ragtune.jobs import JobReporter


def test_every_event_written_reads_back_as_itself(tmp_path):
    written = [OperationStarted(operation="index", config={"k": 5}),
               Progress(step=3, total_steps=10, label="embedding", elapsed_s=1.5, rate=2.0, eta_s=3.5),
               TrainingStep(step=4, total_steps=8, epoch=0.5, loss=1.25, tokens_per_s=310.0),
               PrecisionChosen(bf16=False, threads=2, label="fp32", reason="1.4x faster than bf16"),
               PlanMade(summary="12 rows, 2 epochs", left_out={"rows": 3, "facts": 2}, extra={"epochs": 2}),
               CheckpointSaved(step=4, reason="cancelled"),
               FileIngested(extra={"path": "a.pdf", "status": "added", "chunks": 7, "reason": None})]
    with JobReporter(tmp_path) as reporter:
        for event in written:
            reporter.emit(event)
    events, _ = read_events(tmp_path / "log.jsonl")
    assert [type(e) for e in events] == [type(e) for e in written] + [Ended]
    for got, sent in zip(events, written):
        assert {**got.to_row(), "time": None} == {**sent.to_row(), "time": None}
    assert events[-1].status == "succeeded"


def test_rows_written_before_the_events_had_types_still_read():
    # a training log of the last release: its start row had no name of its own, steps carry no event name
    old_start = parse_event({"event": "start", "method": "lora", "method_label": "LoRA", "device": "cpu",
                             "train_rows": 12, "time": 1.0})
    assert isinstance(old_start, TrainingStarted)
    assert old_start.describe() == "LoRA on cpu: 12 training rows"
    assert isinstance(parse_event({"event": "start", "operation": "ingest", "config": {}}), OperationStarted)
    step = parse_event({"step": 5, "total_steps": 10, "epoch": 1.0, "eval_loss": 0.5, "loss": None})
    assert isinstance(step, TrainingStep) and step.describe() == "epoch 1.00: eval loss 0.5000"
    assert type(parse_event({"step": 1, "total_steps": 2, "label": "a"})) is Progress
    # a row of a kind this version does not know keeps every key, and writes back unchanged
    unknown = {"event": "from_the_future", "time": 2.0, "detail": [1, 2]}
    event = parse_event(unknown)
    assert type(event) is JobEvent and event.to_row() == unknown
    # a key a known event does not declare is kept too
    assert parse_event({"event": "warning", "message": "m", "bogus": 1}).to_row()["bogus"] == 1


def test_each_event_is_said_in_one_place():
    assert JobWarning(message="disk nearly full").describe() == "warning: disk nearly full"
    assert PrecisionChosen(label="bf16 mixed precision", threads=1, reason="fastest").describe() == \
        "precision: bf16 mixed precision, 1 thread (fastest)"
    plan = PlanMade(summary="80 rows", left_out={"rows": 4, "facts": 3, "documents_without_rows": ["a.pdf"]})
    assert plan.describe() == ("80 rows\nleft out to fit the budget: 4 rows (3 facts); "
                               "documents with no rows kept: a.pdf")
    assert Progress(step=1).describe() is None  # the bar shows it


def test_progress_counts_from_this_processs_first_reading():
    ticks = iter([100.0, 110.0, 130.0])
    meter = ProgressMeter(clock=lambda: next(ticks))
    first = meter.reading(40, 100)  # a resumed job: 40 were done before this process started
    assert (first.step, first.rate, first.eta_s, first.elapsed_s) == (40, None, None, 10.0)
    later = meter.reading(60, 100, "answering")
    assert (later.rate, later.eta_s, later.elapsed_s, later.label) == (round(20 / 30, 3), 60.0, 30.0, "answering")


def test_job_progress_summarises_the_newest_reading(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in (
        {"event": "start", "operation": "eval", "config": {}},
        {"step": 1, "total_steps": 4, "label": "q1", "rate": 0.5, "eta_s": 6.0},
        {"event": "warning", "message": "skipped 2 lines"},
        {"step": 2, "total_steps": 4, "label": "q2", "rate": 0.5, "eta_s": 4.0})) + '{"step": 3, "tot')
    progress = JobProgress.of(read_events(log)[0])  # a row still being written is left for the next read
    assert (progress.done, progress.total, progress.label, progress.eta_s) == (2, 4, "q2", 4.0)
    assert progress.warnings == ["skipped 2 lines"]
