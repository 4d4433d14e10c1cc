"""Does fine-tuning teach Gemma 3 270M the sample documents? Base vs tuned, in the same run.

    python bench/training_heldout.py [--epochs 4] [--lr 1e-3] [--json bench/results/training_heldout.json]
    python bench/training_heldout.py --paraphrase WORKSPACE --adapter NAME [--max-test 80]

The second form scores an adapter trained by `ragtune train` on a `ragtune synth --split-by paraphrase`
set: the test split's held-out wordings of the facts that run actually trained on (its plan may have
left facts out to fit the time budget), base vs tuned, fact hit with the paired interval.

1. ingest datasets/sample into a scratch workspace, `synthesize` a Q&A set (extractive teacher,
   split by source chunk);
2. train a LoRA adapter on Gemma 3 270M as a real background job (the path `ragtune train` takes),
   printing the log as it goes;
3. answer questions with the base model and with the tuned one (greedy, serving chat template):
   - gold questions written by people (datasets/sample_qa.jsonl), never in the training set, split into
     those whose fact the training split covers (one training answer holds all of the gold answer's
     values: "held-out questions, trained facts") and the rest;
   - the synthetic test split (held-out chunks, closed book): the tuned model cannot know these facts,
     so it shows there is no leak.
   Score: fact hit (every number/code of the gold answer appears in the answer) and token F1, with the
   evaluation's paired bootstrap interval of tuned minus base and the Wilcoxon p-value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluation.metrics import fact_hit, key_values, token_f1  # noqa: E402  (after the path is set)


def generate_all(model_path: Path, adapter: Path | None, questions: list[str], batch: int = 8,
                 max_new_tokens: int = 32) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    template = (model_path / "serving_chat_template.jinja").read_text()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    stop = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    out = []
    for i in range(0, len(questions), batch):
        texts = [tok.apply_chat_template([{"role": "user", "content": q}], chat_template=template,
                                         add_generation_prompt=True, tokenize=False) for q in questions[i:i + batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:]:
            out.append(tok.decode(row, skip_special_tokens=True).strip())
        print(f"  generated {len(out)}/{len(questions)}", flush=True)
    return out


def score(preds: list[str], refs: list[str]) -> dict:
    hits = [h for h in (fact_hit(p, r) for p, r in zip(preds, refs)) if h is not None]
    f1 = [token_f1(p, r) for p, r in zip(preds, refs)]
    return {"n": len(refs), "fact_hit": round(sum(hits) / len(hits), 3) if hits else None,
            "fact_hit_n": len(hits), "token_f1": round(sum(f1) / len(f1), 3) if f1 else None}


def paired(tuned: list[str], base: list[str], refs: list[str]) -> dict:
    """Tuned minus base per question, with the evaluation's paired bootstrap interval and Wilcoxon p."""
    from evaluation.stats import paired_test

    out = {}
    for metric, fn in (("fact_hit", fact_hit), ("token_f1", token_f1)):
        result = paired_test([fn(t, r) for t, r in zip(tuned, refs)], [fn(b, r) for b, r in zip(base, refs)],
                             a="tuned", b="base", metric=metric)
        out[metric] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.to_dict().items()}
    return out


def evaluate(dataset, adapter: Path, args) -> dict:
    """Base vs tuned answers on gold and held-out questions; prints the table, returns the report."""
    from ragtune.models import resolve_llm

    model_path = resolve_llm("gemma-3-270m", progress=False).path
    train_rows = dataset.rows("train")
    trained_answers = {}
    for r in train_rows:
        trained_answers.setdefault(r["doc"], []).append(key_values(r["answer"]))
    gold = [json.loads(line) for line in (REPO / "datasets" / "sample_qa.jsonl").read_text().splitlines() if line.strip()]
    # A gold fact counts as trained when one training answer from its document holds all of its values.
    covered = [g for g in gold if key_values(g["answer"])
               and any(key_values(g["answer"]) <= keys for keys in trained_answers.get(g["doc"], []))]
    uncovered = [g for g in gold if g not in covered]
    test = dataset.rows("test")[: args.max_test]
    sets = {"gold_trained_facts": covered, "gold_other": uncovered, "synth_test_heldout_chunks": test}
    questions = [q["question"] for rows in sets.values() for q in rows]
    t1 = time.time()
    base = generate_all(model_path, None, questions)
    tuned = generate_all(model_path, adapter, questions)
    gen_s = time.time() - t1
    results, i = {}, 0
    for name, rows in sets.items():
        refs = [r["answer"] for r in rows]
        b, t = base[i:i + len(rows)], tuned[i:i + len(rows)]
        i += len(rows)
        results[name] = {"base": score(b, refs), "tuned": score(t, refs), "tuned_minus_base": paired(t, b, refs),
                         "examples": [{"q": r["question"], "gold": r["answer"], "base": bb, "tuned": tt}
                                      for r, bb, tt in zip(rows, b, t)]}
    print("\n== held-out answers: base vs tuned (Gemma 3 270M, LoRA) ==")
    for name, r in results.items():
        b, t = r["base"], r["tuned"]
        ratio = (t["fact_hit"] / b["fact_hit"]) if b["fact_hit"] else float("inf") if t["fact_hit"] else float("nan")
        d = r["tuned_minus_base"]["fact_hit"]
        print(f"{name:28s} n={b['n']:3d}  fact_hit base {b['fact_hit']} tuned {t['fact_hit']} (x{ratio:.1f}, "
              f"diff {d['mean_diff']} [{d['ci_low']}, {d['ci_high']}], p={d['p_value']})  "
              f"token_f1 base {b['token_f1']} tuned {t['token_f1']}")
    return {"adapter": str(adapter), "generation_s": round(gen_s, 1),
            "dataset": dataset.to_dict() | {"split_chunks": None}, "results": results}


def trained_fact_questions(ws, adapter_name: str, limit: int, seed: int = 0) -> tuple[list[dict], dict]:
    """Test rows (held-out wordings) whose fact the adapter's training run kept, with values to check."""
    import random

    from ragtune.adapters import get_adapter
    from ragtune.atomic import read_json
    from ragtune.jobs import list_jobs
    from training.synth import get_dataset

    info = get_adapter(ws, adapter_name)
    dataset = get_dataset(ws, info.dataset)
    job = next(j for j in list_jobs(ws, kind="train") if (j.result or {}).get("adapter") == adapter_name)
    plan = read_json(job.dir / "plan.json")["plan"]
    train = dataset.rows("train")
    trained = {train[i]["fact"] for i in plan["kept"]}
    rows = [r for r in dataset.rows("test") if r.get("fact") in trained and key_values(r["answer"])]
    random.Random(seed).shuffle(rows)
    about = {"dataset": dataset.name, "split_by": dataset.manifest.get("split_by"), "trained_rows": len(plan["kept"]),
             "trained_facts": len(trained), "heldout_questions_about_trained_facts": len(rows),
             "job": job.id, "job_metrics": job.result.get("metrics"), "plan": job.result.get("plan")}
    return rows[:limit], about


def evaluate_paraphrase(ws, adapter_name: str, args) -> dict:
    from ragtune.adapters import get_adapter
    from ragtune.models import resolve_llm

    rows, about = trained_fact_questions(ws, adapter_name, args.max_test)
    if about["split_by"] != "paraphrase":
        print("warning: the dataset was not split by paraphrase; its test questions are about held-out text")
    model_path = resolve_llm(get_adapter(ws, adapter_name).base_model, progress=False).path
    questions, refs = [r["question"] for r in rows], [r["answer"] for r in rows]
    t = time.time()
    base = generate_all(model_path, None, questions, max_new_tokens=args.max_new_tokens)
    tuned = generate_all(model_path, Path(get_adapter(ws, adapter_name).path), questions,
                         max_new_tokens=args.max_new_tokens)
    result = {"base": score(base, refs), "tuned": score(tuned, refs), "tuned_minus_base": paired(tuned, base, refs)}
    d = result["tuned_minus_base"]["fact_hit"]
    print(f"held-out wordings of trained facts (n={len(rows)}): fact hit base {result['base']['fact_hit']} tuned "
          f"{result['tuned']['fact_hit']}, difference {d['mean_diff']} [{d['ci_low']}, {d['ci_high']}], p={d['p_value']}")
    return {**about, "adapter": adapter_name, "generation_s": round(time.time() - t, 1), "result": result,
            "examples": [{"q": q, "gold": g, "base": b, "tuned": tt}
                         for q, g, b, tt in list(zip(questions, refs, base, tuned))[:20]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--questions-per-fact", type=int, default=None, help="default: `ragtune synth`'s")
    ap.add_argument("--max-facts", type=int, default=None, help="default: `ragtune synth`'s")
    ap.add_argument("--max-length", type=int, default=None, help="tokens per packed sequence (default: auto)")
    ap.add_argument("--max-test", type=int, default=20, help="synthetic test questions to answer")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "training_heldout.json"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch workspace")
    ap.add_argument("--eval-only", metavar="WORKSPACE", help="skip training: evaluate --adapter on this workspace's newest dataset")
    ap.add_argument("--adapter", help="adapter folder for --eval-only (a finished adapter or a checkpoint); "
                                      "adapter name for --paraphrase")
    ap.add_argument("--paraphrase", metavar="WORKSPACE",
                    help="score --adapter on held-out wordings of the facts its run trained on")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    import torch

    if args.paraphrase:
        torch.set_num_threads(args.threads)
        from ragtune.workspace import Workspace

        report = evaluate_paraphrase(Workspace(Path(args.paraphrase)), args.adapter, args)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
        return 0

    if args.eval_only:
        torch.set_num_threads(args.threads)
        from ragtune.workspace import Workspace
        from training.synth import latest_dataset

        report = evaluate(latest_dataset(Workspace(Path(args.eval_only))), Path(args.adapter), args)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
        return 0

    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="ragtune-bench-"))
    os.environ["RAGTUNE_HOME"] = str(scratch)
    from ragtune.jobs import get_job, read_log
    from ragtune.models import resolve_llm
    from ragtune.workspace import Workspace
    from retrieval.documents import all_chunks
    from retrieval.ingest import ingest_paths
    from training.config import defaults_for
    from app.wiring import OPERATIONS
    from training.jobs import TRAIN
    from training.synth import SynthConfig, synthesize

    ws = Workspace.create("bench", root=scratch / "workspaces")
    ingest_paths(ws, [REPO / "datasets" / "sample"])
    chunks = all_chunks(ws)
    synth_options = {k: v for k, v in {"questions_per_fact": args.questions_per_fact,
                                       "max_facts_per_chunk": args.max_facts}.items() if v}
    dataset = synthesize(ws, SynthConfig(**synth_options), chunks=chunks)
    print(f"dataset {dataset.name}: {dataset.counts}, teacher={dataset.teacher}, {len(chunks)} chunks", flush=True)

    overrides = {k: v for k, v in {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                                   "max_length": args.max_length}.items() if v}
    config = defaults_for("gemma-3-270m", "lora", dataset=dataset.name, adapter_name="bench-heldout",
                          num_threads=args.threads, **overrides)
    print("config:", json.dumps(config.to_dict()), flush=True)
    t0 = time.time()
    job = OPERATIONS.start(ws, TRAIN, config)
    offset, losses = 0, []
    while True:
        rows, offset = read_log(job.log_path, offset)
        for r in rows:
            if r.get("loss") is not None:
                losses.append(r["loss"])
                print(f"  step {r['step']}/{r['total_steps']} loss {r['loss']:.3f} lr {r['learning_rate']:.2e} "
                      f"{r.get('tokens_per_s')} tok/s mem {r['memory_mb']:.0f} MB", flush=True)
            elif r.get("eval_loss") is not None:
                print(f"  epoch {r['epoch']:.1f} eval_loss {r['eval_loss']:.3f}", flush=True)
        job = get_job(ws, job.id)
        if job.finished:
            break
        time.sleep(2)
    train_s = time.time() - t0
    if job.status != "succeeded":
        print(f"training {job.status}: {job.error}", file=sys.stderr)
        return 1
    print(f"training took {train_s / 60:.1f} min; metrics {job.result['metrics']}", flush=True)

    report = evaluate(dataset, Path(job.result["path"]), args)
    report.update({"train_minutes": round(train_s / 60, 2), "config": config.to_dict(),
                   "job_metrics": job.result["metrics"], "first_losses": losses[:5], "last_losses": losses[-5:]})
    print(f"training: {train_s / 60:.1f} min, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json}")
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
