"""`ragtune synth`, `ragtune train`, `ragtune jobs ...`, `ragtune adapters ...`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ragtune.config_args import add_dataclass_arguments, dataclass_from_args, given_fields
from ragtune.progress import progress_bar
from training.config import TrainConfig
from training.synth import SynthConfig

from .common import (add_detach_arg, add_json_arg, add_workspace_arg, open_workspace, print_json, resume_hint,
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
    p = sub.add_parser("synth", help="make a question/answer training set from the workspace's documents")
    add_workspace_arg(p)
    add_dataclass_arguments(p, SynthConfig)
    add_detach_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_synth)

    p = sub.add_parser("datasets", help="list the workspace's training set versions")
    add_workspace_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_datasets)

    p = sub.add_parser("train", help="fine-tune a model (LoRA, QLoRA or full) on a training set, as a background job")
    add_workspace_arg(p)
    p.add_argument("--base-model", "--model", dest="base_model", default="gemma-3-270m",
                   help="base model: gemma-3-270m, tiny-llama, a local folder or a Hugging Face id (default: %(default)s)")
    p.add_argument("--method", choices=["lora", "qlora", "full"], default="lora",
                   help="lora: low-rank adapters; qlora: 4-bit NF4 base + adapters; full: every weight (default: %(default)s)")
    p.add_argument("--dataset", help="dataset version (e.g. v2) or a .jsonl/.csv file (default: newest version)")
    p.add_argument("--adapter-name", "--name", dest="adapter_name", help="name of the adapter to save")
    p.add_argument("--target-modules", help="comma-separated module names for LoRA")
    add_dataclass_arguments(p, TrainConfig, exclude=_TRAIN_NAMED, defaults_to_none=True, helps=_TRAIN_HELP,
                            default_note="(default: per model)")
    p.add_argument("--detach", action="store_true", help="start the job and return at once")
    add_json_arg(p)
    p.set_defaults(func=_train)

    jobs = sub.add_parser("jobs", help="list, show, cancel or resume background jobs")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = jsub.add_parser("list", help="list jobs")
    add_workspace_arg(p)
    p.add_argument("--kind", help="only jobs of this kind (train, eval...)")
    add_json_arg(p)
    p.set_defaults(func=_jobs_list)
    p = jsub.add_parser("show", help="status and last log rows of a job")
    add_workspace_arg(p)
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="follow a training job's progress until it ends")
    add_json_arg(p)
    p.set_defaults(func=_jobs_show)
    p = jsub.add_parser("cancel", help="cancel a running job (a training job checkpoints first)")
    add_workspace_arg(p)
    p.add_argument("job_id")
    p.set_defaults(func=_jobs_cancel)
    p = jsub.add_parser("resume", help="resume a cancelled, failed or stopped job (training: from its last checkpoint; "
                                       "evaluation: only the missing answers; index: only the chunks not embedded yet; "
                                       "ingest: only the files not stored yet)")
    add_workspace_arg(p)
    p.add_argument("job_id")
    p.add_argument("--detach", action="store_true")
    p.set_defaults(func=_jobs_resume)

    ad = sub.add_parser("adapters", help="list, delete or merge trained adapters")
    asub = ad.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = asub.add_parser("list", help="list adapters")
    add_workspace_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_adapters_list)
    p = asub.add_parser("delete", help="delete an adapter")
    add_workspace_arg(p)
    p.add_argument("name")
    p.set_defaults(func=_adapters_delete)
    p = asub.add_parser("merge", help="merge a LoRA adapter into its base model and export safetensors")
    add_workspace_arg(p)
    p.add_argument("name")
    p.add_argument("--out", help="output folder (default: <workspace>/adapters/<name>-merged)")
    p.add_argument("--register", action="store_true", help="also register the merged model as a 'full' adapter")
    p.set_defaults(func=_adapters_merge)


# ------------------------------------------------------------------ synth

def _synth(args):
    from app.training_data import SYNTH

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
    from training.dataset_store import list_datasets

    versions = list_datasets(open_workspace(args))
    if args.json:
        print_json([v.to_dict() for v in versions])
        return 0
    if not versions:
        print("no datasets yet: `ragtune synth` (after ingesting documents) or `ragtune synth --from-file FILE`")
    for v in versions:
        c = v.counts
        print(f"{v.name:5s} train {c.get('train', 0):5d}  val {c.get('validation', 0):4d}  test {c.get('test', 0):4d}  "
              f"teacher {v.teacher or 'upload'}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(v.manifest.get('created_at', 0)))}")
    return 0


# ------------------------------------------------------------------ train and jobs

def build_train_config(args):
    from training.config import defaults_for

    overrides = {name: value for name, value in given_fields(TrainConfig, args).items() if name not in _TRAIN_NAMED}
    if args.target_modules:
        overrides["target_modules"] = [m.strip() for m in args.target_modules.split(",") if m.strip()]
    overrides["dataset"] = args.dataset
    overrides["adapter_name"] = args.adapter_name
    return defaults_for(args.base_model, args.method, **overrides)


def _train(args):
    from training.jobs import start_training

    ws = open_workspace(args)
    config = build_train_config(args)
    job = start_training(ws, config)
    if args.json and args.detach:
        print_json(job.to_dict())
        return 0
    print(f"started training job {job.id}: {config.method} on {config.base_model} -> adapter "
          f"'{job.config['adapter_name']}' (log: {job.log_path}); it first measures speed and prints the plan")
    if args.detach:
        print(f"follow it with `ragtune jobs show {job.id} -f -w {args.workspace}`; cancel with `ragtune jobs cancel {job.id}`")
        return 0
    return follow_job(ws, job.id, json_out=args.json)


def follow_job(ws, job_id: str, json_out: bool = False) -> int:
    """A progress bar (a line every 10 s when redirected) over the job's JSONL log until the job ends;
    Ctrl-C leaves the job running."""
    from ragtune.jobs import get_job, read_log

    job = get_job(ws, job_id)
    bar = progress_bar(desc="training" if job.kind == "train" else job.kind, unit="step", disable=json_out)
    offset = 0
    try:
        while True:
            rows, offset = read_log(job.log_path, offset)
            for row in rows:
                if row.get("step") is not None:
                    bar.update_to(row["step"], row.get("total_steps") or bar.total)
                post = {}
                if row.get("loss") is not None:
                    post["loss"] = f"{row['loss']:.3f}"
                if row.get("eval_loss") is not None:
                    bar.write(f"epoch {row.get('epoch', 0):.2f}: eval loss {row['eval_loss']:.4f}")
                if row.get("tokens_per_s"):
                    post["tok/s"] = f"{row['tokens_per_s']:.0f}"
                if row.get("memory_mb"):
                    post["mem"] = f"{row['memory_mb']:.0f}MB"
                if post:
                    bar.set_postfix(post, refresh=False)
                if row.get("event") == "measuring":
                    bar.write(f"measuring: {row.get('message')}")
                if row.get("event") == "precision_probe":
                    bar.write(f"  {row.get('setting')}: " + (f"{row['tokens_per_s']} tokens/s" if row.get("tokens_per_s")
                                                           else row.get("stopped") or "stopped early"))
                if row.get("event") == "precision":
                    threads = row.get("threads")
                    bar.write(f"precision: {row.get('label')}" + (f", {threads} thread{'s' if threads > 1 else ''}"
                                                                   if threads else "")
                              + f" ({row.get('reason')})")
                if row.get("event") == "plan":
                    bar.write(row.get("summary", ""))
                    left = row.get("left_out") or {}
                    if left.get("rows"):
                        bar.write(f"left out to fit the budget: {left['rows']} rows ({left.get('facts')} facts)"
                                  + (f"; documents with no rows kept: {', '.join(left['documents_without_rows'])}"
                                     if left.get("documents_without_rows") else ""))
                if row.get("event") == "budget_stop":
                    bar.write(row.get("message", ""))
                if row.get("event") == "checkpoint":
                    bar.write(f"checkpoint saved at step {row.get('step')} ({row.get('reason')})")
                if row.get("event") == "start":
                    bar.write(f"{row.get('method_label')} on {row.get('device')}: {row.get('train_rows')} training rows"
                              + (f", resuming from {row['resume_checkpoint']}" if row.get("resume_checkpoint") else ""))
                if row.get("event") == "sequence_length":
                    bar.write(f"sequences of {row['max_length']} tokens" + (" (auto)" if row.get("auto") else "")
                              + f"; longest row {row.get('longest_row')} tokens")
                if row.get("event") == "warning":
                    bar.write(f"warning: {row.get('message')}")
                if row.get("event") == "skipped_rows":
                    bar.write(f"skipped {row['count']} malformed rows: {row.get('lines', [])[:5]}")
            job = get_job(ws, job_id)
            if job.finished:
                rows, offset = read_log(job.log_path, offset)
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped following; job {job_id} keeps running (`ragtune jobs cancel {job_id}` to stop it)")
        return 130
    bar.close()
    if json_out:
        print_json(job.to_dict())
    elif job.status == "succeeded" and job.kind == "eval":
        r = job.result
        print(f"done: evaluation {r.get('run_id')} on the {r.get('engine')} engine, {r.get('computed')} answers "
              f"generated, {r.get('cached')} reused; `ragtune report {r.get('run_id')} -w {ws.name}` exports it")
        print(r.get("recommendation", {}).get("text", ""))
    elif job.status == "succeeded" and job.kind != "train":
        print(f"done: {job.kind} job {job.id}")
        print_json(job.result)
    elif job.status == "succeeded":
        r = job.result
        m = r.get("metrics", {})
        print(f"done: {r.get('method_label', r.get('method'))}; adapter '{r.get('adapter')}' at {r.get('path')}")
        print(f"loss {m.get('first_loss', float('nan')):.3f} -> {m.get('last_loss', float('nan')):.3f}, "
              f"eval loss {m.get('eval_loss')}, {m.get('steps')} steps, {m.get('tokens_per_s')} tokens/s")
        if m.get("train_runtime_s") and m.get("estimated_train_s"):
            print(f"training took {m['train_runtime_s'] / 60:.1f} min (estimated {m['estimated_train_s'] / 60:.1f} min)")
    else:
        print(f"job {job_id} {job.status}: {job.error}", file=sys.stderr)
        if job.status.resumable:
            print(resume_hint(job, ws), file=sys.stderr)
    return 0 if job.status == "succeeded" else 1


def _jobs_list(args):
    from ragtune.jobs import list_jobs

    jobs = list_jobs(open_workspace(args), kind=args.kind)
    if args.json:
        print_json([j.to_dict() for j in jobs])
        return 0
    if not jobs:
        print("no jobs")
    for j in jobs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created_at))
        print(f"{j.id:40s} {j.kind:8s} {j.status:10s} {when}" + (f"  {j.error[:80]}" if j.error else ""))
    return 0


def _jobs_show(args):
    from ragtune.jobs import get_job, read_log

    ws = open_workspace(args)
    job = get_job(ws, args.job_id)
    if args.follow:  # a job that ended before the command started still ends with its 'done:' summary
        return follow_job(ws, job.id, json_out=args.json)
    rows, _ = read_log(job.log_path)
    if args.json:
        print_json({**job.to_dict(), "log_tail": rows[-20:]})
        return 0
    print(f"{job.id}: {job.kind}, {job.status}" + (f" ({job.error})" if job.error else ""))
    steps = [r for r in rows if r.get("loss") is not None]
    if steps:
        last = steps[-1]
        print(f"step {last['step']}/{last.get('total_steps')} loss {last['loss']:.4f} "
              f"({steps[0]['loss']:.4f} at the start), {last.get('tokens_per_s')} tokens/s, {last.get('memory_mb')} MB")
    evals = [r for r in rows if r.get("eval_loss") is not None]
    for r in evals:
        print(f"epoch {r.get('epoch')}: eval loss {r['eval_loss']:.4f}")
    if job.result:
        print_json(job.result)
    return 0


def _jobs_cancel(args):
    from training.jobs import cancel_training

    job = cancel_training(open_workspace(args), args.job_id)
    print(f"cancel requested for {job.id}" if not job.finished else f"job {job.id} already {job.status}")
    return 0


def _jobs_resume(args):
    from evaluation.service import JOB_KIND as EVAL_KIND, resume_evaluation
    from app.wiring import OPERATIONS
    from ragtune.jobs import get_job
    from training.jobs import KIND as TRAIN_KIND, resume_training

    ws = open_workspace(args)
    kind = get_job(ws, args.job_id).kind
    resume = {EVAL_KIND: resume_evaluation, TRAIN_KIND: resume_training}.get(kind, OPERATIONS.resume)
    job = resume(ws, args.job_id)
    print(f"resumed job {job.id}")
    return 0 if args.detach else follow_job(ws, job.id)


# ------------------------------------------------------------------ adapters

def _adapters_list(args):
    from ragtune.adapters import list_adapters

    adapters = list_adapters(open_workspace(args))
    if args.json:
        print_json([a.to_dict() for a in adapters])
        return 0
    if not adapters:
        print("no adapters yet: `ragtune train`")
    for a in adapters:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.created_at))
        loss = a.metrics.get("eval_loss")
        print(f"{a.name:40s} {a.method:5s} base {a.base_model:14s} data {a.dataset or '-':8s} "
              f"eval_loss {loss if loss is None else f'{loss:.4f}'}  {when}")
    return 0


def _adapters_delete(args):
    from ragtune.adapters import delete_adapter

    delete_adapter(open_workspace(args), args.name)
    print(f"deleted adapter '{args.name}'")
    return 0


def _adapters_merge(args):
    from training.merge import merge_adapter

    ws = open_workspace(args)
    out = merge_adapter(ws, args.name, Path(args.out) if args.out else None, register=args.register)
    print(f"merged model written to {out}")
    return 0

