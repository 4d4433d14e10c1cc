"""`ragtune app`: start the builder app in the browser (optionally with the sample workspace ready)."""

from __future__ import annotations

import os

from app.wiring import OPERATIONS
from ragtune.errors import JobError
from ragtune.models import DEFAULT_LLM
from ragtune.paths import repo_datasets_dir
from ragtune.progress import PhaseProgress
from ragtune.workspace import Workspace
from retrieval.documents import list_documents
from retrieval.index import index_state
from retrieval.service import INDEX, INGEST, IndexConfig, IngestConfig

from .common import add_workspace_arg

SAMPLE_WORKSPACE = "sample"


def register(sub) -> None:
    p = sub.add_parser("app", help="open the builder app in your browser (Gradio, on this machine)")
    p.add_argument("--sample", action="store_true",
                   help=f"open the '{SAMPLE_WORKSPACE}' workspace, creating it from datasets/sample and indexing it if needed")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only); set RAGTUNE_BUILDER_PASSWORD "
                        "to require a login")
    p.add_argument("--port", type=int, default=7860, help="port of the app (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_LLM,
                   help="language model to serve: gemma-3-270m (default), tiny-llama (tests), or a local folder")
    p.add_argument("--deploy-port", type=int, default=None,
                   help="port of the end-user assistant server (default: the app port + 1 when free, else any free port)")
    add_workspace_arg(p)
    p.set_defaults(func=run)


def prepare_sample(name: str = SAMPLE_WORKSPACE) -> Workspace:
    """Create the sample workspace, add datasets/sample and build its index (the same ingest and index
    operations as `ragtune ingest` / `ragtune index`), showing progress here."""
    ws = Workspace.create(name, exist_ok=True)

    def run(op, config, desc, unit):
        bar = PhaseProgress(desc, unit=unit)
        try:
            job = OPERATIONS.run_here(ws, op, config, echo=bar)
        finally:
            bar.close()
        if job.status != "succeeded":
            raise JobError(f"Preparing the sample workspace: the {op.kind} job {job.id} {job.status}: {job.error}")
        return job.result

    if not list_documents(ws):
        source = repo_datasets_dir() / "sample"
        print(f"Adding the sample documents from {source} to workspace '{name}'...", flush=True)
        for r in run(INGEST, IngestConfig(paths=[str(source)]), "reading", "file")["results"]:
            print(f"  {r['name']}: {r['status']}" + (f" ({r['chunks']} chunks)" if r["status"] == "added"
                                                     else f" - {r['reason']}" if r["reason"] else ""))
    state = index_state(ws)
    if not state["built"] or state["stale"]:
        print("Building the search index (the embedding model loads first)...", flush=True)
        info = run(INDEX, IndexConfig(), "indexing", "chunk")
        print(f"Index ready: {info.get('chunks')} passages ({info.get('kind')}).", flush=True)
    return ws


def run(args) -> int:
    from app.ui.main import launch

    if args.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("RAGTUNE_BUILDER_PASSWORD"):
        print(f"warning: listening on {args.host} without a login; set RAGTUNE_BUILDER_PASSWORD to require one.",
              flush=True)

    workspace = args.workspace
    if args.sample:
        workspace = prepare_sample().name
    elif workspace:
        workspace = Workspace.open(workspace, create=True).name
    launch(model=args.model, host=args.host, port=args.port, workspace=workspace, deploy_port=args.deploy_port)
    return 0
