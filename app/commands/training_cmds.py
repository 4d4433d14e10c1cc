"""`ragtune synth`, `ragtune train`, `ragtune jobs ...`, `ragtune adapters ...`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app.training_data import SYNTH
from app.wiring import OPERATIONS
from ragtune.adapters import delete_adapter, list_adapters
from ragtune.config_args import add_dataclass_arguments, dataclass_from_args, given_fields
from ragtune.job_events import Progress, TrainingStep, of_type, read_events
from ragtune.jobs import JobStatus, cancel_job, get_job, list_jobs
from ragtune.progress import progress_bar
from training.config import TrainConfig, defaults_for
from training.dataset_store import list_datasets
from training.jobs import TRAIN
from training.merge import merge_adapter
from training.synth import SynthConfig

from .common import (add_actions, add_command, local_time, open_workspace, print_json, print_list, resume_hint,
                     run_operation)


# Help for TrainConfig fields without metadata help; the flags themselves come from the dataclass, so a new
# field is a new flag.
_TRAIN_HELP = {
    "epochs": "number of passes over the training split",
    "lr": "peak learning rate",
    "rank": "LoRA rank",
    "alpha": "LoRA alpha (scale = alpha / rank)",
    "dropout": "LoRA dropout",
    "max_length": "tokens per (packed) sequence (auto: the shortest of 128..2048 that holds every row)",
    "packing": "pack short rows into padding-free sequences (true/false)",
    "batch_size": "sequences per device per step",
    "grad_accum": "gradient accumulation steps",
    "warmup_ratio": "share of steps spent warming up the learning rate",
    "weight_decay": "AdamW weight decay",
    "lr_scheduler": "learning-rate schedule (cosine, linear, constant...)",
    "max_steps": "stop after this many steps (overrides epochs when > 0)",
    "assistant_only_loss": "learn only the answers (true/false)",
    "gradient_checkpointing": "trade compute for memory (true/false)",
    "eval_each_epoch": "evaluation loss on the validation split each epoch",
    "early_stopping_patience": "stop after N epochs without a better eval loss (none: off)",
    "save_steps": "checkpoint every N steps (for resume)",
    "seed": "random seed",
    "accelerate_config": "run under `accelerate launch` with this YAML (examples/accelerate/)",
}
# Named explicitly below (aliases, choices, a comma list).
_TRAIN_NAMED = ("base_model", "method", "dataset", "adapter_name", "target_modules")


def register(sub) -> None:
    for add_group in (_register_synth, _register_train, _register_jobs, _register_adapters):
        add_group(sub)


def _register_synth(sub) -> None:
    p = add_command(sub, "synth", _synth, help="make a question/answer training set from the workspace's documents",
                    detach=True, json=True)
    add_dataclass_arguments(p, SynthConfig)
    add_command(sub, "datasets", _datasets, help="list the workspace's training set versions", json=True)


def _register_train(sub) -> None:
    p = add_command(sub, "train", _train, detach=True, json=True,
                    help="fine-tune a model (LoRA, QLoRA or full) on a training set, as a background job")
    p.add_argument("--base-model", "--model", dest="base_model", default="gemma-3-270m",
                   help="base model: gemma-3-270m, tiny-llama, a local folder or a Hugging Face id (default: %(default)s)")
    p.add_argument("--method", choices=["lora", "qlora", "full"], default="lora",
                   help="lora: low-rank adapters; qlora: 4-bit NF4 base + adapters; full: every weight (default: %(default)s)")
    p.add_argument("--dataset", help="dataset version (e.g. v2) or a .jsonl/.csv file (default: newest version)")
    p.add_argument("--adapter-name", "--name", dest="adapter_name", help="name of the adapter to save")
    p.add_argument("--target-modules", help="comma-separated module names for LoRA")
    add_dataclass_arguments(p, TrainConfig, exclude=_TRAIN_NAMED, defaults_to_none=True, helps=_TRAIN_HELP,
                            default_note="(default: per model)")


def _register_jobs(sub) -> None:
    actions = add_actions(sub, "jobs", help="list, show, cancel or resume background jobs")
    p = add_command(actions, "list", _jobs_list, help="list jobs", json=True)
    p.add_argument("--kind", help="only jobs of this kind (train, eval...)")
    p = add_command(actions, "show", _jobs_show, help="status and last log rows of a job", json=True)
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="follow a training job's progress until it ends")
    p = add_command(actions, "cancel", _jobs_cancel, help="cancel a running job (a training job checkpoints first)")
    p.add_argument("job_id")
    p = add_command(actions, "resume", _jobs_resume, detach=True,
                    help="resume a cancelled, failed or stopped job (training: from its last checkpoint; "
                         "evaluation: only the missing answers; index: only the chunks not embedded yet; "
                         "ingest: only the files not stored yet)")
    p.add_argument("job_id")


def _register_adapters(sub) -> None:
    actions = add_actions(sub, "adapters", help="list, delete or merge trained adapters")
    add_command(actions, "list", _adapters_list, help="list adapters", json=True)
    p = add_command(actions, "delete", _adapters_delete, help="delete an adapter")
    p.add_argument("name")
    p = add_command(actions, "merge", _adapters_merge,
                    help="merge a LoRA adapter into its base model and export safetensors")
    p.add_argument("name")
    p.add_argument("--out", help="output folder (default: <workspace>/adapters/<name>-merged)")
    p.add_argument("--register", action="store_true", help="also register the merged model as a 'full' adapter")


# ------------------------------------------------------------------ synth

def _synth(args):
    ws = open_workspace(args)
    config = dataclass_from_args(SynthConfig, args)
    desc = "Importing your file" if config.from_file else f"Writing questions ({config.teacher})"
    job = run_operation(ws, SYNTH, config, args, desc=desc, unit="chunk")
    if job.status != "succeeded":
        return 0 if args.detach else 1
    if job.result.get("skipped"):
        print(f"skipped {job.result['skipped']} malformed rows: {job.result['skipped_detail']}", file=sys.stderr)
    return _print_dataset(job.result["dataset"], args)


def _print_dataset(version: dict, args):
    if args.json:
        print_json(version)
        return 0
    c = version.get("counts") or {}
    print(f"dataset {version['name']}: {c.get('train', 0)} train / {c.get('validation', 0)} validation / "
          f"{c.get('test', 0)} test rows (teacher: {version.get('teacher') or 'uploaded file'}, "
          f"split by {version.get('split_by')}) at {version['path']}")
    if version.get("dropped"):
        print(f"dropped: {version['dropped']}")
    return 0


def _datasets(args):
    return print_list(args, list_datasets(open_workspace(args)), _dataset_line,
                      empty="no datasets yet: `ragtune synth` (after ingesting documents) or `ragtune synth --from-file FILE`")


def _dataset_line(v) -> str:
    c = v.counts
    return (f"{v.name:5s} train {c.get('train', 0):5d}  val {c.get('validation', 0):4d}  test {c.get('test', 0):4d}  "
            f"teacher {v.teacher or 'upload'}  {local_time(v.manifest.get('created_at'), never='-')}")


# ------------------------------------------------------------------ train and jobs

def build_train_config(args):
    overrides = {name: value for name, value in given_fields(TrainConfig, args).items() if name not in _TRAIN_NAMED}
    if args.target_modules:
        overrides["target_modules"] = [m.strip() for m in args.target_modules.split(",") if m.strip()]
    overrides["dataset"] = args.dataset
    overrides["adapter_name"] = args.adapter_name
    return defaults_for(args.base_model, args.method, **overrides)


def _train(args):
    ws = open_workspace(args)
    config = build_train_config(args)
    job = OPERATIONS.start(ws, TRAIN, config)
    if args.json and args.detach:
        print_json(job.to_dict())
        return 0
    print(f"started training job {job.id}: {config.method} on {config.base_model} -> adapter "
          f"'{job.config['config']['adapter_name']}' (log: {job.log_path}); it first measures speed and prints the plan")
    if args.detach:
        print(f"follow it with `ragtune jobs show {job.id} -f -w {args.workspace}`; cancel with `ragtune jobs cancel {job.id}`")
        return 0
    return follow_job(ws, job.id, json_out=args.json)


def follow_job(ws, job_id: str, json_out: bool = False) -> int:
    """A progress bar (a line every 10 s when redirected) over the job's events until the job ends, each event
    said in its own words (``JobEvent.describe``); Ctrl-C leaves the job running."""
    job = get_job(ws, job_id)
    bar = progress_bar(desc="training" if job.kind == "train" else job.kind, unit="step", disable=json_out)
    offset = 0
    try:
        while True:
            events, offset = read_events(job.log_path, offset)
            for event in events:
                _show_event(bar, event)
            if job.finished:
                break
            job = get_job(ws, job_id)  # read the log once more after the job ends: its last rows come first
            if not job.finished:
                time.sleep(1.0)
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped following; job {job_id} keeps running (`ragtune jobs cancel {job_id}` to stop it)")
        return 130
    bar.close()
    _print_outcome(ws, job, json_out)
    return 0 if job.status == JobStatus.SUCCEEDED else 1


def _show_event(bar, event) -> None:
    if isinstance(event, Progress):
        bar.update_to(event.step, event.total_steps or bar.total)
    if isinstance(event, TrainingStep):
        post = {"loss": f"{event.loss:.3f}"} if event.loss is not None else {}
        if event.tokens_per_s:
            post["tok/s"] = f"{event.tokens_per_s:.0f}"
        if event.memory_mb:
            post["mem"] = f"{event.memory_mb:.0f}MB"
        if post:
            bar.set_postfix(post, refresh=False)
    said = event.describe()
    if said:
        bar.write(said)


def _print_outcome(ws, job, json_out: bool) -> None:
    if json_out:
        print_json(job.to_dict())
    elif job.status == JobStatus.SUCCEEDED and job.kind == "eval":
        r = job.result
        print(f"done: evaluation {r.get('run_id')} on the {r.get('engine')} engine, {r.get('computed')} answers "
              f"generated, {r.get('cached')} reused; `ragtune report {r.get('run_id')} -w {ws.name}` exports it")
        print(r.get("recommendation", {}).get("text", ""))
    elif job.status == JobStatus.SUCCEEDED and job.kind != "train":
        print(f"done: {job.kind} job {job.id}")
        print_json(job.result)
    elif job.status == JobStatus.SUCCEEDED:
        r = job.result
        m = r.get("metrics", {})
        print(f"done: {r.get('method_label', r.get('method'))}; adapter '{r.get('adapter')}' at {r.get('path')}")
        print(f"loss {m.get('first_loss', float('nan')):.3f} -> {m.get('last_loss', float('nan')):.3f}, "
              f"eval loss {m.get('eval_loss')}, {m.get('steps')} steps, {m.get('tokens_per_s')} tokens/s")
        if m.get("train_runtime_s") and m.get("estimated_train_s"):
            print(f"training took {m['train_runtime_s'] / 60:.1f} min (estimated {m['estimated_train_s'] / 60:.1f} min)")
    else:
        print(f"job {job.id} {job.status}: {job.error}", file=sys.stderr)
        if job.status.resumable:
            print(resume_hint(job, ws), file=sys.stderr)


def _jobs_list(args):
    return print_list(args, list_jobs(open_workspace(args), kind=args.kind), _job_line, empty="no jobs")


def _job_line(j) -> str:
    return f"{j.id:40s} {j.kind:8s} {j.status:10s} {local_time(j.created_at)}" + (f"  {j.error[:80]}" if j.error else "")


def _jobs_show(args):
    ws = open_workspace(args)
    job = get_job(ws, args.job_id)
    if args.follow:  # a job that ended before the command started still ends with its 'done:' summary
        return follow_job(ws, job.id, json_out=args.json)
    events, _ = read_events(job.log_path)
    if args.json:
        print_json({**job.to_dict(), "log_tail": [e.to_row() for e in events[-20:]]})
        return 0
    print(f"{job.id}: {job.kind}, {job.status}" + (f" ({job.error})" if job.error else ""))
    steps = [e for e in of_type(events, TrainingStep) if e.loss is not None]
    if steps:
        last = steps[-1]
        print(f"step {last.step}/{last.total_steps} loss {last.loss:.4f} ({steps[0].loss:.4f} at the start), "
              f"{last.tokens_per_s} tokens/s, {last.memory_mb} MB")
    for e in of_type(events, TrainingStep):
        if e.eval_loss is not None:
            print(e.describe())
    if job.result:
        print_json(job.result)
    return 0


def _jobs_cancel(args):
    job = cancel_job(open_workspace(args), args.job_id)
    print(f"cancel requested for {job.id}" if not job.finished else f"job {job.id} already {job.status}")
    return 0


def _jobs_resume(args):
    ws = open_workspace(args)
    job = OPERATIONS.resume(ws, args.job_id)
    print(f"resumed job {job.id}")
    return 0 if args.detach else follow_job(ws, job.id)


# ------------------------------------------------------------------ adapters

def _adapters_list(args):
    return print_list(args, list_adapters(open_workspace(args)), _adapter_line, empty="no adapters yet: `ragtune train`")


def _adapter_line(a) -> str:
    when = local_time(a.created_at)
    loss = a.metrics.get("eval_loss")
    return (f"{a.name:40s} {a.method:5s} base {a.base_model:14s} data {a.dataset or '-':8s} "
            f"eval_loss {loss if loss is None else f'{loss:.4f}'}  {when}")


def _adapters_delete(args):
    delete_adapter(open_workspace(args), args.name)
    print(f"deleted adapter '{args.name}'")
    return 0


def _adapters_merge(args):
    ws = open_workspace(args)
    out = merge_adapter(ws, args.name, Path(args.out) if args.out else None, register=args.register)
    print(f"merged model written to {out}")
    return 0

