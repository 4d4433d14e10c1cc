"""The ingest gate against archive bombs: time and extra peak RSS of a refusal, against ingesting a real DOCX.

Both run in this process, one after the other: the real DOCX (datasets/sample/travel_policy.docx) is
the baseline, then a 400 KB DOCX that inflates to 400 MB goes through the library path (what
`ragtune ingest` and the builder app call) and through the deploy server's upload route.

    python bench/ingest_gate.py [--inflated-mb 400]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from measuring import measured, rss_mb  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")




def write_bomb(path: Path, inflated_mb: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(inflated_mb):
                f.write(block)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inflated-mb", type=int, default=400)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from fastapi.testclient import TestClient

    from ragtune.workspace import Workspace
    from retrieval.ingest import ingest_paths
    from serving.deploy.server import build_deploy_app

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace.create("bench", root=tmp / "ws")
        bomb = write_bomb(tmp / "report.docx", args.inflated_mb)
        bomb_kb = round(bomb.stat().st_size / 1024)
        ingest_paths(ws, [REPO / "datasets" / "sample" / "faq.md"])  # tokenizer and caches loaded
        (good,), good_s, good_mb = measured(lambda: ingest_paths(ws, [REPO / "datasets" / "sample" / "travel_policy.docx"]))
        (refused,), bomb_s, bomb_mb = measured(lambda: ingest_paths(ws, [bomb]))
        assert good.status == "added" and refused.status == "failed" and "archive bomb" in refused.reason
        from app.wiring import deploy_uploads

        app = build_deploy_app(ws, None, builder_password="pw", start_ingest=deploy_uploads())
        with TestClient(app) as client:
            small = write_bomb(tmp / "minutes.docx", 60)  # under the 100 MB upload budget: refused while streaming
            http = {}
            for b in (bomb, small):
                r, s, mb = measured(lambda: client.post("/builder/bench/documents", auth=("b", "pw"),
                                                        files=[("files", (b.name, b.read_bytes(), "application/octet-stream"))]))
                assert r.status_code == 400 and "archive bomb" in r.text, r.text
                http[b.name] = {"seconds": round(s, 4), "extra_rss_mb": round(mb, 1)}
    out = {
        "bomb": {"file_kb": bomb_kb, "inflated_mb": args.inflated_mb},
        "real_docx_ingest": {"seconds": round(good_s, 4), "extra_rss_mb": round(good_mb, 1)},
        "bomb_refusal_library": {"seconds": round(bomb_s, 4), "extra_rss_mb": round(bomb_mb, 1),
                                 "time_vs_real_docx": round(bomb_s / good_s, 3)},
        "bomb_refusal_http": http,
    }
    print(json.dumps(out, indent=2))
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "ingest_gate.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
