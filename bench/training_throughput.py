"""Training throughput: ragtune's recipe vs a plain transformers Trainer + peft baseline, same run.

    python bench/training_throughput.py [--model gemma-3-270m] [--rows 60] [--repeats 1]
    python bench/training_throughput.py --methods lora,qlora      # on a GPU: QLoRA memory vs LoRA

Both train one epoch of LoRA on the same rows (datasets/sample_train_qa.jsonl, repeated to --rows; or the
first --rows of --data, any chat JSONL such as a workspace's synthesised train.jsonl)
with the same model, rank, alpha, dropout, target modules, learning rate, precision and torch threads: the
ones ragtune measures fastest on this machine (``training.precision``: fp32 vs bf16 autocast and the thread
counts worth trying, timed on real steps in a subprocess of its own before both runs; its time is reported
as probe_s), or the ones --precision and --threads name.

ragtune: its training path as a job runs it (``training.run.build_trainer`` with the job's callbacks:
a JSONL log row per step, the cancel check before every layer, the budget guard): trl SFTTrainer,
best-fit packing into padding-free sequences at ragtune's own length and batch for the model,
assistant-only loss with the LM head scored on the answer tokens only (``training.lm_head``), frozen
base weights stored in bf16 when bf16 runs (``load_base_model``).
Baseline, the plain recipe a user writes from the transformers/peft docs: the model as
``from_pretrained`` gives it (fp32: this checkpoint's dtype), ``get_peft_model`` with the same LoRA
config, rows formatted with the chat template and tokenized, ``DataCollatorForLanguageModeling``
(pads each batch to its longest row, loss on every non-pad token), ``Trainer`` with batch 8 and
``bf16=True`` when bf16 runs (autocast), no checkpoints, no evaluation.

Each run is its own subprocess, so peak memory is per run. Tokens are counted the same way on both
sides: the trainer's ``num_input_tokens_seen`` over non-padding tokens (the baseline also reports the
padded positions it computed). tokens/s is over ``trainer.train()`` only; one-off setup (model load,
dataset preparation, trainer construction: setup_s; the precision probe: probe_s) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


SAMPLE = REPO / "datasets" / "sample_train_qa.jsonl"


def load_rows(n: int, data: Path = SAMPLE) -> list[dict]:
    from training.chat_data import load_chat_file

    rows, _ = load_chat_file(data)
    return [rows[i % len(rows)] for i in range(n)]


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SEQUENCE_LENGTH = 512  # the baseline's cap (it pads per batch); ragtune packs to its own default length


def run_probe(model: str, rows: list[dict], method: str, batch: int, threads: int | None, bf16: bool | None) -> dict:
    """The precision and thread count ragtune's own measurement picks for this model, as ``ragtune train``
    measures them (at the run's sequence length, answers-only labels); a set one is not measured against."""
    from transformers import AutoTokenizer

    from ragtune.models import resolve_llm
    from training.config import defaults_for
    from training.precision import choose_precision
    from training.run import bf16_preparation, fit_max_length, probe_inputs, row_lengths, trainable_model

    t = time.time()
    path = resolve_llm(model, progress=False).path
    config = defaults_for(model, method, batch_size=batch)
    tok = AutoTokenizer.from_pretrained(path)
    ids, labels = probe_inputs(tok, rows, config.max_length or fit_max_length(row_lengths(tok, rows)), batch)
    choice = choose_precision(lambda: trainable_model(path, config), ids, labels=labels, bf16=bf16, threads=threads,
                              steps=1, prepare_bf16=bf16_preparation(config))
    return {"bf16": choice.bf16, "threads": choice.threads, "reason": choice.reason,
            "probe_s": round(time.time() - t, 1)}


def run_ragtune(model: str, rows: list[dict], method: str, batch: int, out: Path, bf16: bool) -> dict:
    from ragtune.jobs import JobReporter
    from ragtune.models import resolve_llm
    from training.config import defaults_for
    from training.callbacks import make_callbacks
    from training.run import add_cancel_check, build_trainer

    # ragtune's own sequence length (auto for Gemma 3 270M: the shortest standard length that holds every
    # row). Packing short rows into 512 tokens would pay for attention across 512 positions that a short
    # pack does not: measured on Gemma 3 270M, one 448-token pack took 7.5 s, eight 56-token rows 4.8 s.
    config = defaults_for(model, method, epochs=1, batch_size=batch, save_steps=10**6, eval_each_epoch=False,
                          bf16=bf16)
    t = time.time()
    reporter = JobReporter(out / "job")  # as a job runs: a log row per step, the cancel check, the budget guard
    callbacks = make_callbacks(reporter, config, 0.0, deadline=time.time() + 10**6)
    trainer = build_trainer(config, resolve_llm(model, progress=False).path, rows, [], out / "checkpoints",
                            callbacks)
    callbacks[0].accelerator = trainer.accelerator
    add_cancel_check(trainer.model, reporter)
    setup = time.time() - t
    t, cpu = time.time(), time.process_time()
    trainer.train()
    wall, cpu = time.time() - t, time.process_time() - cpu
    return {"tokens": trainer.state.num_input_tokens_seen, "wall_s": wall, "steps": trainer.state.global_step,
            "cpu_s": round(cpu, 3), "setup_s": round(setup, 1), "sequence_length": trainer.args.max_length}


def run_baseline(model: str, rows: list[dict], method: str, batch: int, out: Path, bf16: bool) -> dict:
    """The common recipe: chat template -> tokenize -> pad per batch -> Trainer on a peft model."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments)

    from ragtune.models import resolve_llm
    from training.config import defaults_for

    config = defaults_for(model, method)
    t = time.time()
    path = resolve_llm(model, progress=False).path
    tok = AutoTokenizer.from_pretrained(path)
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    data = Dataset.from_dict({"text": texts}).map(
        lambda b: tok(b["text"], add_special_tokens=False, truncation=True, max_length=SEQUENCE_LENGTH),
        batched=True, remove_columns=["text"])
    kwargs = {}  # the checkpoint's dtype (fp32 for Gemma 3 270M here), as a plain from_pretrained gives it
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs = {"dtype": torch.bfloat16, "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)}
    elif torch.cuda.is_available():
        kwargs = {"dtype": torch.bfloat16}
    base = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    peft_model = get_peft_model(base, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                                 target_modules=config.target_modules, task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=1,
                             learning_rate=config.lr, bf16=bf16, use_cpu=not torch.cuda.is_available(),
                             logging_steps=10, save_strategy="no", report_to="none", disable_tqdm=True,
                             include_num_input_tokens_seen="non_padding", dataloader_pin_memory=False)
    pad_per_batch = DataCollatorForLanguageModeling(tok, mlm=False)
    positions = [0]  # what the baseline computes, padding included

    def collate(features):
        batch = pad_per_batch(features)
        positions[0] += batch["input_ids"].numel()
        return batch

    trainer = Trainer(model=peft_model, args=args, train_dataset=data, data_collator=collate)
    setup = time.time() - t
    t, cpu = time.time(), time.process_time()
    trainer.train()
    wall, cpu = time.time() - t, time.process_time() - cpu
    return {"tokens": trainer.state.num_input_tokens_seen, "wall_s": wall, "steps": trainer.state.global_step,
            "cpu_s": round(cpu, 3), "setup_s": round(setup, 1), "padded_positions": positions[0]}


def child(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = load_rows(args.rows, Path(args.data))
    if args.variant == "probe":
        bf16 = None if args.precision == "auto" else args.precision == "bf16"
        print("RESULT " + json.dumps(run_probe(args.model, rows, args.method, args.batch_ragtune, args.threads or None, bf16)),
              flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fn = run_ragtune if args.variant == "ragtune" else run_baseline
        result = fn(args.model, rows, args.method, args.batch_ragtune if args.variant == "ragtune" else args.batch_baseline,
                    Path(tmp), args.precision == "bf16")
    result.update(variant=args.variant, method=args.method, precision=args.precision, threads=torch.get_num_threads(),
                  peak_memory_mb=round(peak_memory_mb(), 1),
                  tokens_per_s=round(result["tokens"] / result["wall_s"], 1),
                  tokens_per_cpu_s=round(result["tokens"] / result["cpu_s"], 1),
                  device="cuda" if torch.cuda.is_available() else "cpu")
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--data", default=str(SAMPLE), help="chat JSONL to train on (default: the sample Q&A)")
    ap.add_argument("--methods", default="lora", help="comma-separated: lora,qlora")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both sides (default: the count ragtune measures fastest, as the precision)")
    ap.add_argument("--batch-ragtune", type=int, default=None, help="packed sequences per step (default: per model)")
    ap.add_argument("--batch-baseline", type=int, default=8, help="rows per step for the padded baseline")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "training_throughput.json"))
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: the faster of fp32 and bf16 autocast as ragtune measures it (default)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch_ragtune is None:
        from training.config import defaults_for

        args.batch_ragtune = defaults_for(args.model).batch_size
    if args.variant:
        child(args)
        return 0

    def run_child(variant: str, method: str, precision: str, threads: int | None) -> dict | None:
        cmd = [sys.executable, __file__, "--variant", variant, "--method", method, "--model", args.model,
               "--rows", str(args.rows), "--data", args.data, "--threads", str(threads or 0), "--precision", precision,
               "--batch-ragtune", str(args.batch_ragtune), "--batch-baseline", str(args.batch_baseline)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{variant}/{method} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return None
        return json.loads(line[7:])

    results, precisions = [], {}
    for method in args.methods.split(","):
        precision, threads = args.precision, args.threads
        if precision == "auto" or threads is None:
            probe = run_child("probe", method, precision, threads)
            if probe is None:
                return 1
            precision, threads = "bf16" if probe["bf16"] else "fp32", probe["threads"] or threads
            print(f"{method}: precision {precision}, {threads} thread(s) for both sides ({probe['reason']}; "
                  f"probe {probe['probe_s']} s)", flush=True)
            precisions[method] = {"precision": precision, "threads": threads, "reason": probe["reason"],
                                  "probe_s": probe["probe_s"]}
        for _ in range(args.repeats):
            for variant in ("ragtune", "baseline"):
                r = run_child(variant, method, precision, threads)
                if r is None:
                    return 1
                results.append(r)
                print(f"{method:6s} {variant:9s} {r['precision']:5s} {r['threads']}t {r['tokens_per_s']:8.1f} tok/s  {r['wall_s']:7.1f} s  "
                      f"({r['tokens_per_cpu_s']:.1f} tok/CPU-s)  "
                      f"{r['steps']:4d} steps  {r['tokens']} tokens  setup {r['setup_s']} s  "
                      f"peak {r['peak_memory_mb']:.0f} MB ({r['device']})", flush=True)

    def mean(method, variant, key):
        vals = [r[key] for r in results if r["method"] == method and r["variant"] == variant]
        return sum(vals) / len(vals)

    summary = {}
    for method in args.methods.split(","):
        speed = mean(method, "ragtune", "tokens_per_s") / mean(method, "baseline", "tokens_per_s")
        per_cpu = mean(method, "ragtune", "tokens_per_cpu_s") / mean(method, "baseline", "tokens_per_cpu_s")
        memory = mean(method, "ragtune", "peak_memory_mb") / mean(method, "baseline", "peak_memory_mb")
        summary[method] = {"speedup": round(speed, 2), "speedup_per_cpu_s": round(per_cpu, 2),
                           "memory_ratio": round(memory, 2)}
        # Tokens per CPU-second is the steadier figure when other work shares the machine.
        print(f"{method}: ragtune / baseline tokens/s = x{speed:.2f} (per CPU-second x{per_cpu:.2f}); "
              f"peak memory ratio {memory:.2f}")
    if "qlora" in summary and "lora" in summary:
        ratio = mean("qlora", "ragtune", "peak_memory_mb") / mean("lora", "ragtune", "peak_memory_mb")
        summary["qlora_vs_lora_memory"] = round(ratio, 2)
        print(f"QLoRA / LoRA peak memory (ragtune) = {ratio:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "rows": args.rows, "data": args.data, "threads": args.threads or "measured",
                                           "precision": precisions or args.precision, "runs": results,
                                           "summary": summary}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
