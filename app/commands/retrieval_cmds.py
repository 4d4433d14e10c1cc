"""`ragtune ingest`, `ragtune index`, `ragtune documents ...`, `ragtune search`, `ragtune eval-retrieval`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from ragtune.config_args import add_dataclass_arguments, dataclass_from_args
from ragtune.workspace import Workspace
from retrieval.documents import delete_document, document_chunks, list_documents
from retrieval.evaluate import evaluate_retriever, load_qa
from retrieval.index import index_state
from retrieval.ingest import ingest_paths
from retrieval.search import Retriever
from retrieval.service import INDEX, INGEST, IndexConfig, IngestConfig
from retrieval.tuning import describe_tuning

from .common import add_actions, add_command, open_workspace, print_json, print_list, run_operation


def register(sub) -> None:
    for add_group in (_register_building, _register_documents, _register_search):
        add_group(sub)


def _register_building(sub) -> None:
    p = add_command(sub, "ingest", _ingest, help="add documents (files or folders) to a workspace", detach=True,
                    json=True)
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_dataclass_arguments(p, IngestConfig)
    p = add_command(sub, "index", _index, help="build or update the search index (only new chunks are embedded)",
                    detach=True, json=True)
    add_dataclass_arguments(p, IndexConfig)
    p.add_argument("--status", action="store_true",
                   help="only say whether the index is built and still covers the documents (exit 1 if not)")


def _register_documents(sub) -> None:
    actions = add_actions(sub, "documents", help="list, inspect or delete the documents of a workspace")
    add_command(actions, "list", _list, help="list documents", json=True)
    p = add_command(actions, "delete", _delete, json=True,
                    help="delete a document (by id or file name); run `ragtune index` afterwards")
    p.add_argument("doc")
    p = add_command(actions, "chunks", _chunks, help="show the chunks of a document", json=True)
    p.add_argument("doc")


def _register_search(sub) -> None:
    p = add_command(sub, "search", _search, help="retrieve passages for a question, with citations", json=True)
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default=None)
    p = add_command(sub, "eval-retrieval", _eval, json=True,
                    help="hit@k, recall@k and MRR of dense, BM25 and hybrid retrieval")
    p.add_argument("--qa", required=True, help="JSONL/CSV with questions and gold sources (doc/page or [file.pdf#page=N])")
    p.add_argument("--docs", help="index this folder into a temporary workspace first (or into --workspace with --keep)")
    p.add_argument("--keep", action="store_true", help="with --docs: index into --workspace instead of a temporary one")
    p.add_argument("--k", type=int, nargs="+", default=[1, 5], help="cut-offs for hit@k and recall@k (default: 1 5)")
    p.add_argument("--modes", nargs="+", default=["dense", "bm25", "hybrid"], choices=["dense", "bm25", "hybrid"])
    p.add_argument("--show-misses", action="store_true", help="list the questions whose top passage is wrong")


def _ingest(args):
    ws = open_workspace(args, create=True)
    config = dataclass_from_args(IngestConfig, args, paths=args.paths)
    job = run_operation(ws, INGEST, config, args, desc="ingesting", unit="file")
    if job.status != "succeeded":
        return 0 if args.detach else 1
    results, built = job.result["results"], job.result["index"]
    if args.json:
        print_json({"workspace": ws.name, "results": results, "index": built, "job": job.id})
    else:
        for r in results:
            extra = f" ({r['reason']})" if r["reason"] else ""
            print(f"{r['status']:9s} {r['name']}" + (f": {r['chunks']} chunks" if r["status"] == "added" else "") + extra)
        added = sum(r["status"] == "added" for r in results)
        print(f"{added} added, {sum(r['status'] == 'duplicate' for r in results)} duplicate, "
              f"{sum(r['status'] == 'failed' for r in results)} failed")
        if built:
            print(f"index {built['version']}: {built['chunks']} chunks ({built['kind']}), {built['embedded']} newly embedded")
        elif added:
            print(f"next: `ragtune index -w {ws.name}` to make them searchable")
    return 1 if any(r["status"] == "failed" for r in results) else 0


def _index(args):
    ws = open_workspace(args)
    if args.status:
        return _index_state(ws, args)
    job = run_operation(ws, INDEX, dataclass_from_args(IndexConfig, args), args, desc="indexing", unit="chunk")
    if job.status != "succeeded":
        return 0 if args.detach else 1
    result = job.result
    if args.json:
        print_json(result)
    else:
        state = "unchanged" if result.get("unchanged") else f"{result['embedded']} chunks embedded"
        print(f"index {result['version']}: {result['chunks']} chunks, {result['kind']} search, {state}")
    return 0


def _index_state(ws, args) -> int:
    state = index_state(ws)
    if args.json:
        print_json(state)
    elif not state["built"]:
        print(f"no index yet ({state['documents']} documents): build it with `ragtune index -w {ws.name}`")
    else:
        m = state["manifest"]
        print(f"index {m['version']}: {m['chunks']} chunks from {m.get('documents', '?')} documents, {m['kind']} search"
              + (f"; STALE: documents changed since the build, run `ragtune index -w {ws.name}`" if state["stale"] else ""))
    return 0 if state["built"] and not state["stale"] else 1


def _list(args):
    return print_list(args, list_documents(open_workspace(args)), _document_line,
                      empty="no documents yet: `ragtune ingest PATH`")


def _document_line(d: dict) -> str:
    pages = f"{d['pages']} pages, " if d["pages"] else ""
    return f"{d['doc_id']}  {d['name']}  ({d['kind']}, {pages}{d['chunks']} chunks, {d['size'] / 1024:.0f} KB)"


def _delete(args):
    doc = delete_document(open_workspace(args), args.doc)
    if args.json:
        print_json({"deleted": doc["doc_id"], "name": doc["name"]})
    else:
        print(f"deleted {doc['name']} ({doc['doc_id']}); run `ragtune index` to update the search index")


def _chunks(args):
    chunks = document_chunks(open_workspace(args), args.doc)
    if args.json:
        print_json([c.to_dict() for c in chunks])
        return
    for c in chunks:
        where = ", ".join(x for x in (f"page {c.page}" if c.page else "", c.section or "") if x)
        print(f"--- #{c.ord} {c.tokens} tokens" + (f" ({where})" if where else ""))
        print(c.text)


def _search(args):
    passages = Retriever.for_workspace(open_workspace(args)).retrieve(args.query, k=args.k, mode=args.mode)
    if args.json:
        print_json([p.to_dict() for p in passages])
        return
    for n, p in enumerate(passages, start=1):
        print(f"[{n}] {p.citation}  score {p.score:.4f}" + (f"  ({p.section})" if p.section else ""))
        print("    " + " ".join(p.text.split())[:300])


def _eval(args):
    rows = load_qa(args.qa)
    tmp = None
    if args.docs:
        if args.keep:
            ws = open_workspace(args, create=True)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="ragtune-eval-"))
            ws = Workspace.create("eval", root=tmp)
        results = ingest_paths(ws, [args.docs])
        failed = [r for r in results if r.status == "failed"]
        for r in failed:
            print(f"warning: {r.name} not indexed: {r.reason}", file=sys.stderr)
    else:
        ws = open_workspace(args)
    try:
        built = None
        if args.docs:  # the same index job as `ragtune index` (its progress, cancel; one build path)
            job = run_operation(ws, INDEX, IndexConfig(), args, desc="indexing", unit="chunk")
            if job.status != "succeeded":
                return 1
            built = job.result
        retriever = Retriever.for_workspace(ws)
        report = evaluate_retriever(retriever, rows, modes=args.modes, ks=tuple(sorted(set(args.k))))
        report["tuned"] = retriever.manifest.get("tuned")
        if built is not None:
            report["index"] = built
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    misses = {m: report[m].pop("misses@1") for m in args.modes}
    if args.json:
        if args.show_misses:
            report["misses@1"] = misses
        print_json(report)
        return
    print(f"{report['n']} questions")
    print(describe_tuning(report["tuned"]))
    keys = list(report[args.modes[0]].keys())
    print(f"{'metric':16s}" + "".join(f"{m:>10s}" for m in args.modes))
    for key in keys:
        print(f"{key:16s}" + "".join(f"{report[m].get(key, float('nan')):10.3f}" for m in args.modes))
    if args.show_misses:
        for m in args.modes:
            for miss in misses[m]:
                print(f"[{m}] {miss['question']}  gold={miss['gold']}  got={miss['got']}")
