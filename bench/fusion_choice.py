"""The fusion ragtune chooses, against the fixed defaults, dense alone and BM25 alone, on people's questions.

    python bench/fusion_choice.py [--corpora ntsb,nih,...] [--root DIR]

For every corpus with a gold set: ingest and index it as a user would (no questions given: the index
build decides on the evidence it has), then doc_hit@1/@5/@10 on the gold questions of

- chosen: the fusion the index build chose (the defaults unless the evidence resembled people's);
- chosen-on-gold: the fusion chosen on a user's gold set, scored by 2-fold cross-validation (chosen on
  one half of the gold questions, scored on the other, then the other way round), as `ragtune index --qa`;
- made-questions: what the previous rule chose on questions made from the corpus's sentences;
- defaults, dense alone, BM25 alone (the baselines, measured in the same run);

and the wording overlap (median share of a question's content words found in the best chunk of its
gold page) of the gold questions and of the made ones. `ntsb-paraphrased` (questions written to avoid
the documents' words) is the corpus kept aside: no threshold or default was set on it. The bar: the
chosen fusion is never below the defaults nor dense alone at @5. Writes bench/results/fusion_choice.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = REPO.parent / "shared" / "corpora"
GOLD = REPO / "datasets" / "gold"

CORPORA = {  # name: (documents, gold questions)
    "contoso-manuals": (SHARED / "contoso-manuals" / "docs_nofaq", SHARED / "contoso-manuals" / "qa" / "faq_pairs.jsonl"),
    "contoso-benefits": (SHARED / "contoso-benefits" / "docs", SHARED / "contoso-benefits" / "qa" / "ground_truth.jsonl"),
    "ntsb": (SHARED / "ntsb-reports" / "docs", GOLD / "ntsb-reports.jsonl"),
    "ntsb-paraphrased": (SHARED / "ntsb-reports" / "docs", GOLD / "ntsb-reports-paraphrased.jsonl"),
    "nih": (SHARED / "nih-protocols" / "docs", GOLD / "nih-protocols.jsonl"),
    "policyqa": (SHARED / "policyqa" / "docs", SHARED / "policyqa" / "qa" / "policyqa_test_sample200.jsonl"),
    "sample": (REPO / "datasets" / "sample", REPO / "datasets" / "sample_qa.jsonl"),
}
KS = (1, 5, 10)


def doc_hits(retriever, prepared: list[tuple], key: tuple) -> dict:
    """doc_hit@k: the gold document among the documents of the top k fused passages."""
    from retrieval.tuning import fused_order

    hits = {k: 0 for k in KS}
    for row in prepared:
        docs = [retriever.chunks[i].doc for i in fused_order(retriever, row, key)]
        for k in KS:
            hits[k] += bool(set(docs[:k]) & row[2])
    return {f"@{k}": round(hits[k] / len(prepared), 3) for k in KS}


def key_of(settings: dict) -> tuple:
    return (settings["dense_weight"], settings["bm25_weight"], settings["title_weight"], settings["rrf_k"])


def cross_validated(retriever, rows: list[dict], seed: int = 0) -> dict:
    """Choose on one half of the gold rows, score on the other, both ways; hits averaged over the halves."""
    from retrieval.tuning import prepare_rows, tune_fusion

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    halves = [order[::2], order[1::2]]
    totals, chosen = {f"@{k}": 0.0 for k in KS}, []
    for fit, score in (halves, halves[::-1]):
        tuned = tune_fusion(retriever, [rows[i] for i in fit], "of your questions", evidence=True)
        chosen.append(tuned["settings"])
        held = prepare_rows(retriever, [rows[i] for i in score])
        for k, v in doc_hits(retriever, held, key_of(tuned["settings"])).items():
            totals[k] += v * len(score)
    return {**{k: round(v / len(rows), 3) for k, v in totals.items()}, "settings": chosen}


def run_corpus(name: str, docs: Path, qa: Path, root: Path) -> dict:
    from ragtune.workspace import Workspace
    from retrieval.evaluate import load_qa
    from retrieval.index import build_index, index_dir, index_status
    from retrieval.ingest import ingest_paths
    from retrieval.search import Retriever
    from retrieval.settings import RetrievalSettings, load_settings
    from retrieval.tuning import made_questions, prepare_rows, tune_fusion, wording_overlap

    ws = Workspace.create(name if name != "ntsb-paraphrased" else "ntsb", root=root, exist_ok=True)
    t0 = time.perf_counter()
    ingest_paths(ws, [docs])
    build_index(ws, progress=False)
    index_s = time.perf_counter() - t0
    manifest = index_status(ws)
    retriever = Retriever(index_dir(ws), manifest, load_settings(ws, tune=False))
    rows = load_qa(qa)
    prepared = prepare_rows(retriever, rows)
    made = made_questions(retriever.chunks)
    d = RetrievalSettings()
    settings = {
        "chosen": key_of(manifest["tuned"]["settings"]),
        "made-questions": key_of(tune_fusion(retriever, made, "made", evidence=True)["settings"]),
        "defaults": (d.dense_weight, d.bm25_weight, d.title_weight, d.rrf_k),
        "dense": (1.0, 0.0, 0.0, d.rrf_k),
        "bm25": (0.0, 1.0, 0.0, d.rrf_k),
    }
    out = {"n": len(rows), "chunks": len(retriever.chunks), "index_s": round(index_s, 1),
           "wording_overlap": {"gold": round(wording_overlap(rows, retriever.chunks), 3),
                               "made": round(wording_overlap(made, retriever.chunks), 3)},
           "settings": {label: list(key) for label, key in settings.items()}}
    for label, key in settings.items():
        out[label] = doc_hits(retriever, prepared, key)
    out["chosen-on-gold"] = cross_validated(retriever, rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--root", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "ragtune-bench-fusion"),
                        help="workspaces are kept here, so a rerun embeds nothing again")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "fusion_choice.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = {}
    labels = ("chosen", "chosen-on-gold", "made-questions", "defaults", "dense", "bm25")
    print(f"{'corpus':<17} {'n':>4} {'overlap gold/made':>17}  " + "  ".join(f"{x:>16}" for x in labels))
    for name in args.corpora.split(","):
        docs, qa = CORPORA[name]
        if not qa.is_file():
            print(f"{name}: no gold set at {qa}, skipped")
            continue
        r = results[name] = run_corpus(name, docs, qa, Path(args.root))
        cells = "  ".join(f"{r[x]['@1']:.3f}/{r[x]['@5']:.3f}".rjust(16) for x in labels)
        print(f"{name:<17} {r['n']:>4} {r['wording_overlap']['gold']:>8.2f}/{r['wording_overlap']['made']:.2f}  {cells}",
              flush=True)
    print("cells: doc_hit@1/@5. Bar: chosen and chosen-on-gold @5 >= defaults and >= dense alone.")
    for name, r in results.items():
        for label in ("chosen", "chosen-on-gold"):
            floor = max(r["defaults"]["@5"], r["dense"]["@5"])
            print(f"{name:<17} {label:<15} @5 {r[label]['@5']:.3f} vs max(defaults, dense) {floor:.3f}: "
                  f"ratio {r[label]['@5'] / floor if floor else float('nan'):.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
