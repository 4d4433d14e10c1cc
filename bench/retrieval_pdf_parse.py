"""PDF parsing speed: ragtune's parser (pypdfium2 + paragraph/heading rebuild) against poppler's `pdftotext`.

Prints pages/s for both and the ratio, measured in the same run on the same files: the contoso-benefits
PDFs and one long PDF made by concatenating them (several hundred pages).

    python bench/retrieval_pdf_parse.py [--repeat 3] [--long-copies 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpora" / "contoso-benefits" / "docs"


def make_long_pdf(paths: list[Path], copies: int, out: Path) -> int:
    import pypdfium2 as pdfium

    long_pdf = pdfium.PdfDocument.new()
    for _ in range(copies):
        for p in paths:
            src = pdfium.PdfDocument(str(p))
            long_pdf.import_pages(src)
            src.close()
    long_pdf.save(str(out))
    n = len(long_pdf)
    long_pdf.close()
    return n


def time_ragtune(path: Path) -> float:
    from retrieval.formats import parse_file

    t = time.perf_counter()
    parse_file(path)
    return time.perf_counter() - t


def time_pdftotext(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--long-copies", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("pdftotext") is None:
        sys.exit("pdftotext not found: apt-get install -y poppler-utils (needed for the baseline only)")
    import pypdfium2 as pdfium

    pdfs = sorted(CORPUS.glob("*.pdf"))
    with tempfile.TemporaryDirectory() as tmp:
        long_path = Path(tmp) / "long.pdf"
        long_pages = make_long_pdf(pdfs, args.long_copies, long_path)
        cases = [(p.name, p, len(pdfium.PdfDocument(str(p)))) for p in pdfs] + [("long.pdf", long_path, long_pages)]
        rows = []
        for name, path, pages in cases:
            ours = min(time_ragtune(path) for _ in range(args.repeat))
            base = min(time_pdftotext(path) for _ in range(args.repeat))
            rows.append({"file": name, "pages": pages, "ragtune_pages_per_s": pages / ours,
                         "pdftotext_pages_per_s": pages / base, "ratio": base / ours})
            print(f"{name:45s} {pages:5d} pages  ragtune {pages / ours:8.1f} p/s  pdftotext {pages / base:8.1f} p/s"
                  f"  ratio {base / ours:5.2f}x")
    total_pages = sum(r["pages"] for r in rows)
    ours_total = sum(r["pages"] / r["ragtune_pages_per_s"] for r in rows)
    base_total = sum(r["pages"] / r["pdftotext_pages_per_s"] for r in rows)
    print(f"TOTAL {total_pages} pages: ragtune {total_pages / ours_total:.1f} pages/s, pdftotext "
          f"{total_pages / base_total:.1f} pages/s, ratio (ragtune speed / pdftotext speed) {base_total / ours_total:.2f}x")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "retrieval_pdf_parse.json").write_text(json.dumps({"rows": rows, "ratio": base_total / ours_total}, indent=2))


if __name__ == "__main__":
    main()
