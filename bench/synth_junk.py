"""Junk in generated training rows: a seeded sample to label by hand, and the rows the junk filter drops.

    python bench/synth_junk.py CORPUS_DIR --corpus NAME --out bench/results/synth_junk_NAME.json \
        [--seed 7] [--n 60] [--labels OLD.json] [--more-labels MORE.json ...]
    python bench/synth_junk.py --summary bench/results/synth_junk_NAME.json

1. ingest CORPUS_DIR into a scratch workspace (defaults) and run `synthesize` with the defaults
   (extractive teacher, split by chunk), as `ragtune synth` does;
2. run it again with `training.teachers.question_defect` switched off, to count the rows the junk filter
   drops (the difference in rows; the filter also changes which wordings survive de-duplication);
3. concatenate train + validation + test, `random.Random(seed).shuffle`, keep the first N rows: the sample
   (the method of `bench/results/synth_junk_nih.json`).

The rows are written with `label: null`; a person reads each question against its answer and fills in
`label` ("ok" / "junk") and `reason`. `--labels OLD.json` carries the labels over from an earlier file for
rows whose question and answer are unchanged (so after a change to the generator only new rows need reading)
and reports how many of OLD's sampled rows are gone and how many of the rows left are junk
(`earlier_sample_against_these_rows`: the same rows before and after); `--more-labels` carries labels from
more files. `--summary FILE` recounts a labelled file: junk share with a Wilson 95% interval.

bench/results/synth_junk_{contoso_benefits,contoso_manuals,ntsb,nih_recheck}.json were made this way
(docs/training.md, "Junk in the synthetic set").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def generate(docs: Path, root: Path, filtered: bool) -> tuple[list[dict], dict]:
    from ragtune.workspace import Workspace
    from retrieval.documents import all_chunks
    from retrieval.ingest import ingest_paths
    from training import teachers
    from training.synth import SynthConfig, synthesize

    ws = Workspace.create("junk", root=root, exist_ok=True)
    if not all_chunks(ws):
        ingest_paths(ws, [docs])
    original = teachers.question_defect
    if not filtered:
        teachers.question_defect = lambda q: None
    try:
        version = synthesize(ws, SynthConfig(), chunks=all_chunks(ws))
    finally:
        teachers.question_defect = original
    rows = [r for split in ("train", "validation", "test") for r in version.rows(split)]
    return rows, version.manifest


def labelled_rows(path: Path) -> dict:
    """{(question, answer): row} of a labelled file's sample (also the older layout with before/after)."""
    prev = json.loads(path.read_text())
    rows = prev["sample"] if isinstance(prev.get("sample"), list) else prev.get("after", {}).get("sample", [])
    return {(r["question"], r["answer"]): r for r in rows if r.get("label") in ("ok", "junk")}


def summary(labelled: dict) -> dict:
    sample = labelled["sample"]
    junk = sum(r.get("label") == "junk" for r in sample)
    unlabelled = sum(r.get("label") not in ("ok", "junk") for r in sample)
    lo, hi = wilson(junk, len(sample))
    return {"n": len(sample), "junk": junk, "unlabelled": unlabelled, "share": round(junk / max(1, len(sample)), 3),
            "wilson95": [round(lo, 3), round(hi, 3)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("docs", type=Path, nargs="?")
    ap.add_argument("--corpus", help="the corpus's name, kept in the file")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--labels", type=Path, help="earlier labelled file: labels carried over to unchanged rows")
    ap.add_argument("--more-labels", type=Path, nargs="*", default=[],
                    help="other labelled files of the same corpus: their labels are carried over too")
    ap.add_argument("--summary", type=Path, help="only recount this labelled file (its 'sample')")
    args = ap.parse_args()
    if args.summary:
        print(json.dumps(summary(json.loads(args.summary.read_text())), indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unfiltered, _ = generate(args.docs, root, filtered=False)
        rows, manifest = generate(args.docs, root, filtered=True)
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    old = labelled_rows(args.labels) if args.labels else {}
    carried_labels = {}
    for path in args.more_labels[::-1]:
        carried_labels.update(labelled_rows(path))
    carried_labels.update(old)
    paired = None
    if old:  # the earlier labelled sample read against the new rows: which of its rows are gone
        present = {(r["question"], r["answer"]) for r in rows}
        gone = [r for k, r in old.items() if k not in present]
        kept = [r for k, r in old.items() if k in present]
        kept_junk = sum(r["label"] == "junk" for r in kept)
        lo, hi = wilson(kept_junk, len(kept))
        paired = {"labelled": len(old), "junk": sum(r["label"] == "junk" for r in old.values()),
                  "gone": len(gone), "gone_junk": sum(r["label"] == "junk" for r in gone),
                  "kept": len(kept), "kept_junk": kept_junk,
                  "kept_junk_share": round(kept_junk / max(1, len(kept)), 3), "wilson95": [round(lo, 3), round(hi, 3)]}
    sample = []
    for i in order[: args.n]:
        r = rows[i]
        carried = carried_labels.get((r["question"], r["answer"]), {})
        sample.append({"index": i, "question": r["question"], "answer": r["answer"], "doc": r["doc"],
                       "page": r.get("page"), "label": carried.get("label"), "reason": carried.get("reason")})
    out = {
        "corpus": args.corpus or args.docs.name, "docs": str(args.docs),
        "teacher": manifest.get("teacher"), "split_by": manifest.get("split_by"),
        "rows": len(rows), "rows_without_filter": len(unfiltered),
        "dropped_by_filter": len(unfiltered) - len(rows), "dropped_other": manifest.get("dropped"),
        "sample_method": f"train+validation+test concatenated, random.Random({args.seed}).shuffle, first {args.n}",
        "seed": args.seed, "earlier_sample_against_these_rows": paired, "sample": sample,
    }
    text = json.dumps(out, indent=1, ensure_ascii=False) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"{len(rows)} rows ({len(unfiltered)} without the filter); sample of {len(sample)} -> {args.out}; "
              f"{sum(s['label'] is not None for s in sample)} labels carried over")
    else:
        print(text)


if __name__ == "__main__":
    main()
