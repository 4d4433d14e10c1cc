"""The training log's steps carry the rate and ETA every job reports (ragtune.job_events.ProgressMeter):
counted from the step this run began at, so a resumed run's ETA is not skewed by the steps done before it."""

from types import SimpleNamespace

from ragtune.job_events import TrainingBegan, TrainingStep, read_events
from ragtune.jobs import JobReporter
from training.callbacks import StepLog


def test_a_resumed_runs_eta_counts_only_its_own_steps(tmp_path):
    now = [1000.0]
    state = SimpleNamespace(global_step=40, max_steps=100, num_input_tokens_seen=4000, epoch=2.0,
                            is_world_process_zero=True)
    with JobReporter(tmp_path) as reporter:
        log = StepLog(reporter, elapsed_before=300.0, clock=lambda: now[0])
        log.on_train_begin(None, state, None)  # resumed at step 40, after 300 s of earlier runs
        now[0] += 20.0
        state.global_step, state.num_input_tokens_seen = 50, 5000
        log.on_log(None, state, None, logs={"loss": 1.5, "learning_rate": 1e-4})
    events, _ = read_events(tmp_path / "log.jsonl")
    began = next(e for e in events if isinstance(e, TrainingBegan))
    step = next(e for e in events if type(e) is TrainingStep)
    assert began.resumed_from_step == 40
    assert (step.step, step.total_steps, step.loss) == (50, 100, 1.5)
    assert step.rate == 0.5 and step.eta_s == 100.0  # 10 steps in 20 s, 50 to go
    assert step.elapsed_s == 320.0 and step.tokens_per_s == 50.0
