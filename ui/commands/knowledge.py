"""Knowledge commands: ingest, watch, search, status, reindex, eval retrieval."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.progress import TqdmProgress

if TYPE_CHECKING:  # imported where used: `footnotes status` reads files and needs none of it
    from knowledge.kb import KnowledgeBase
    from knowledge.types import SyncReport


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="sync a folder once: add, update and delete to match it")
    p.add_argument("path", help="the knowledge folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_ingest)

    p = sub.add_parser("watch", help="keep the indexes in step with a folder until Ctrl-C")
    p.add_argument("path", nargs="?", help="the knowledge folder (default: [sources.folder] path or the last ingested)")
    p.set_defaults(run=cmd_watch)

    p = sub.add_parser("search", help="hybrid search of the knowledge base")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=None, help="number of hits (default: retrieval.k)")
    p.add_argument("--prefix", default="", help="only documents whose path starts with this")
    p.add_argument("--type", action="append", default=[], help="only this file type, e.g. .md (repeatable)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("status", help="documents, chunks per index, failures, last sync")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("reindex", help="rebuild every index from the sources")
    p.add_argument("path", nargs="?", help="the knowledge folder (default: the last ingested)")
    p.set_defaults(run=cmd_reindex)

    from .evaluation import register_eval

    register_eval(sub)


def open_kb(ctx, folder: str | None = None, write: bool = True) -> KnowledgeBase:
    from knowledge.kb import KnowledgeBase

    progress = TqdmProgress()
    try:
        return KnowledgeBase.open(ctx.config.knowledge, ctx.data_dir, folder=folder, write=write, progress=progress)
    finally:
        progress.close()


def print_report(report: SyncReport, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(report.to_json()))
        return
    print(f"added {len(report.added)}, updated {len(report.updated)}, removed {len(report.removed)}, "
          f"unchanged {report.unchanged}, failed {len(report.failed)} "
          f"({report.chunks_embedded} chunks embedded, {report.chunks_reused} reused)")
    for f in report.failed:
        print(f"  failed: {f.error}", file=sys.stderr)


def cmd_ingest(args, ctx) -> int:
    folder = Path(args.path)
    kb = open_kb(ctx, str(folder))
    try:
        progress = TqdmProgress()
        reports = kb.sync(progress)
        progress.close()
        for report in reports:
            print_report(report, args.json)
        return 0 if kb.sources else 2
    finally:
        kb.close()


def cmd_watch(args, ctx) -> int:
    kb = open_kb(ctx, args.path)
    try:
        for report in kb.sync(TqdmProgress()):
            print_report(report)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill` and service managers stop it like Ctrl-C
        threads = kb.watch(stop, on_report=lambda r: (r.changed or r.failed) and print_report(r))
        print(f"watching {kb.describe()}; Ctrl-C stops", file=sys.stderr, flush=True)
        try:
            while any(t.is_alive() for t in threads):
                stop.wait(0.5)
        except KeyboardInterrupt:
            stop.set()
        for t in threads:
            t.join(timeout=10)
        return 0
    finally:
        kb.close()


def cmd_search(args, ctx) -> int:
    types = tuple(t if t.startswith(".") else f".{t}" for t in args.type)
    hits = _search_through_server(args, ctx, types)
    if hits is None:
        hits = [h.to_json() for h in _search_here(args, ctx, types)]
    if args.json:
        print(json.dumps(hits, ensure_ascii=False))
        return 0
    for i, h in enumerate(hits, 1):
        where = " > ".join(h["heading_path"])
        print(f"{i}. {h['source']} [{h['start']}:{h['end']}] {where}  score={h['score']:.4f}")
        print("   " + " ".join(h["text"].split())[:200])
    return 0


def _search_here(args, ctx, types: tuple[str, ...]):
    from knowledge.retrieval import Filters

    kb = open_kb(ctx, write=False)
    try:
        return kb.retriever.search(args.query, args.k, Filters(args.prefix, types))
    finally:
        kb.close()


def _search_through_server(args, ctx, types: tuple[str, ...]) -> list[dict] | None:
    """The hits from a running `footnotes serve` of this data dir (its models are loaded), or None."""
    from ..server_link import client_for

    client = client_for(ctx)
    if client is None:
        return None
    body = {"query": args.query, "prefix": args.prefix, "types": list(types), **({"k": args.k} if args.k else {})}
    hits = client.post("v1/search", body)
    if isinstance(hits, list):
        print(f"footnotes: answered by the server at {client.url}", file=sys.stderr)
        return hits
    return None


def cmd_status(args, ctx) -> int:
    """Read from the manifest and the index files: no model, no torch, no Chroma client (see
    knowledge/status.py)."""
    from knowledge.kb import read_status
    from knowledge.status import Status

    from ..server_link import client_for

    client = client_for(ctx)
    listed = client.get("v1/documents") if client is not None else None
    if isinstance(listed, dict) and "summary" in listed:
        status, answered_by = Status.from_json(listed["summary"]), f"the server at {client.url}"
    else:
        status, answered_by = read_status(ctx.config.knowledge, ctx.data_dir), None
    if args.json:
        if answered_by:
            print(f"footnotes: answered by {answered_by}", file=sys.stderr)
        print(json.dumps(status.to_json()))
        return 0
    print(f"documents: {status.documents}")
    print(f"chunks: manifest {status.chunks_manifest}, chroma {status.chunks_chroma}, bm25 {status.chunks_bm25}")
    print(f"last sync: {status.last_sync or 'never'}")
    for f in status.failed:
        print(f"failed: {f.doc_id}: {f.error}")
    for w in status.warnings:
        print(f"warning: {w}")
    print(f"answered by: {answered_by or 'this command (the files in ' + str(ctx.data_dir) + ')'}")
    return 0


def cmd_reindex(args, ctx) -> int:
    """Wipe every derived index (manifest, Chroma, BM25, and what is derived from them: the kNN-LM
    datastore) and rebuild it from the sources."""
    from assistant.knn.derived import KNN_DATASTORE
    from knowledge.derived import held_derived
    from knowledge.errors import ConfigError
    from knowledge.kb import open_sources
    from knowledge.reindex import wipe_indexes
    from knowledge.store import take_writer_lock

    knowledge = ctx.config.knowledge
    sources = open_sources(knowledge, ctx.data_dir, args.path)  # a missing folder fails here, before any wipe
    if not sources:
        raise ConfigError("reindex does not know which folder to rebuild from; run `footnotes reindex PATH`")
    remembered = {k: v for s in sources for k, v in s.remember().items()}
    held = held_derived(ctx.data_dir)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    lock = take_writer_lock(ctx.data_dir)  # never wipe under a running watcher or server
    try:
        wipe_indexes(ctx.data_dir, knowledge, keep_meta=remembered)
    finally:
        lock.close()
    print(f"indexes in {ctx.data_dir} wiped; rebuilding from {', '.join(s.describe() for s in sources)}",
          file=sys.stderr)
    kb = open_kb(ctx, args.path)
    try:
        progress = TqdmProgress()
        for report in kb.sync(progress):
            print_report(report)
        progress.close()
        if KNN_DATASTORE.name in held:
            _rebuild_datastore(ctx, kb)
        return 0
    finally:
        kb.close()


def _rebuild_datastore(ctx, kb: KnowledgeBase) -> None:
    """Build the kNN-LM datastore again (it existed before the wipe), with progress."""
    from assistant.generator import Generator
    from assistant.modes.base import ModeResources

    from .knn_eval import build_datastore

    resources = ModeResources(kb.store, kb.data_dir, knn=ctx.config.assistant.knn)
    build_datastore(resources, Generator.from_config(ctx.config.assistant.generator))
    print(f"kNN-LM datastore rebuilt: {kb.data_dir / 'knn'}", file=sys.stderr)
