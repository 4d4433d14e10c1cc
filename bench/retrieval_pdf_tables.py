"""PDF tables: ragtune's parser with pdfplumber tables against its text layer alone and against pdfplumber alone.

For every PDF of the NTSB, NIH and contoso-benefits corpora, in one run on the same files:
- text layer only: pypdfium2 (``parse_file(pdf_tables=False)``), the baseline;
- with tables: pypdfium2 text + pdfplumber tables on pages that draw lines (ragtune's default);
- pdfplumber alone: ``extract_text()`` and ``find_tables()`` on every page (what switching parsers costs).
Prints pages/s of each and the ratios, how many tables pdfplumber finds and ragtune keeps, how many
rows name their columns or labels, the share of the text layer's words still present with tables
(what is lost: labels of empty form fields, which are dropped), and ``--sample`` random table rows to check by hand.

    python bench/retrieval_pdf_tables.py [--corpora ntsb-reports,nih-protocols,contoso-benefits] [--sample 12]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "corpora"


def words(doc) -> Counter:
    text = " ".join(b.text for b in doc.blocks) + " " + " ".join(b.section or "" for b in doc.blocks if b.kind == "table")
    return Counter(re.findall(r"\w+", text.lower()))


def plumber_alone(path: Path) -> tuple[float, int]:
    import pdfplumber

    t = time.perf_counter()
    found = 0
    with pdfplumber.open(str(path)) as pdf:
        for page in pdf.pages:
            page.extract_text()
            found += len(page.find_tables())
            page.close()
    return time.perf_counter() - t, found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default="ntsb-reports,nih-protocols,contoso-benefits")
    ap.add_argument("--sample", type=int, default=12, help="table rows printed per corpus for a hand check")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "retrieval_pdf_tables.json"))
    args = ap.parse_args()
    from ragtune.errors import BadInputError
    from retrieval.formats import parse_file

    results = {}
    rng = random.Random(0)
    for corpus in args.corpora.split(","):
        pdfs = sorted((SHARED / corpus / "docs").glob("*.pdf"))
        pages = t_text = t_tables = t_plumber = 0.0
        raw_tables = kept_tables = rows = named_rows = 0
        old_words = kept_words = 0
        lost: Counter = Counter()
        samples = []
        skipped = []
        for path in pdfs:
            t = time.perf_counter()
            try:
                text_only = parse_file(path, pdf_tables=False)
            except BadInputError as exc:  # a scanned PDF: ingest refuses it too
                skipped.append(f"{path.name} ({exc})")
                continue
            t_text += time.perf_counter() - t
            t = time.perf_counter()
            with_tables = parse_file(path, pdf_tables=True)
            t_tables += time.perf_counter() - t
            seconds, found = plumber_alone(path)
            t_plumber += seconds
            raw_tables += found
            pages += text_only.pages
            tables = [b for b in with_tables.blocks if b.kind == "table"]
            kept_tables += len(tables)
            for b in tables:
                lines = b.text.split("\n")[1 if b.section and b.text.startswith(b.section + "\n") else 0:]
                rows += len(lines)
                named_rows += sum(": " in ln for ln in lines)
                samples += [(path.name, b.page, b.section, ln) for ln in lines]
            old, new = words(text_only), words(with_tables)
            old_words += sum(old.values())
            kept_words += sum((old & new).values())
            lost += old - new
        r = {"pdfs": len(pdfs) - len(skipped), "skipped": skipped, "pages": int(pages),
             "text_pages_per_s": pages / t_text, "tables_pages_per_s": pages / t_tables,
             "plumber_pages_per_s": pages / t_plumber,
             "tables_vs_text_speed": t_text / t_tables, "plumber_vs_text_speed": t_text / t_plumber,
             "pdfplumber_tables_found": raw_tables, "tables_kept": kept_tables, "table_rows": rows,
             "rows_with_names": named_rows, "text_words_kept": kept_words / max(1, old_words)}
        results[corpus] = r
        print(f"{corpus}: {r['pdfs']} PDFs, {int(pages)} pages | text layer {r['text_pages_per_s']:.1f} p/s, "
              f"+ tables {r['tables_pages_per_s']:.1f} p/s (x{r['tables_vs_text_speed']:.2f}), pdfplumber alone "
              f"{r['plumber_pages_per_s']:.1f} p/s (x{r['plumber_vs_text_speed']:.3f}) | tables found by pdfplumber "
              f"{raw_tables}, kept {kept_tables}, rows {rows}, rows naming their columns/labels {named_rows} | "
              f"text-layer words kept {r['text_words_kept']:.3f}", flush=True)
        print("    skipped:", "; ".join(skipped) or "none")
        print("    words lost most often:", ", ".join(f"{w} {n}" for w, n in lost.most_common(15)))
        for name, page, section, line in rng.sample(samples, min(args.sample, len(samples))):
            print(f"    {name} p{page} [{section}] {line[:160]}")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
