"""`footnotes eval ...`: retrieval (here) and the assistant's evaluations (registered when present)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure retrieval or answer quality on a corpus and a query file")
    evals = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    r = evals.add_parser("retrieval", help="recall@1/5/10 and MRR@10 of dense, BM25 and hybrid")
    r.add_argument("--corpus", required=True, help="corpus folder")
    r.add_argument("--queries", required=True, help="JSON Lines query file")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=cmd_eval_retrieval)
    import importlib

    for name in EVAL_MODULES:
        importlib.import_module(name).register_eval(evals)


EVAL_MODULES = ("ui.commands.assistant", "ui.commands.knn_eval")  # modules whose register_eval(evals) adds `eval qa`, ...


def corpus_data_dir(data_dir: Path, corpus: Path) -> Path:
    """A data dir of its own for each evaluated corpus, reused while the corpus is unchanged."""
    key = hashlib.sha1(str(corpus.resolve()).encode()).hexdigest()[:12]
    return data_dir / "eval" / f"{corpus.resolve().name}-{key}"


def open_corpus(ctx, corpus: str):
    from knowledge.kb import KnowledgeBase
    from knowledge.progress import TqdmProgress

    path = Path(corpus)
    progress = TqdmProgress()
    kb = KnowledgeBase.open(ctx.config.knowledge, corpus_data_dir(ctx.data_dir, path), folder=str(path), progress=progress)
    kb.sync(progress)
    progress.close()
    return kb


def cmd_eval_retrieval(args, ctx) -> int:
    from knowledge.evaluation import evaluate_retrieval, read_queries

    queries = read_queries(args.queries)
    kb = open_corpus(ctx, args.corpus)
    try:
        r = kb.retriever
        result = evaluate_retrieval(
            {"dense": r.search_dense, "bm25": r.search_bm25, "hybrid": lambda q, k: r.search(q, k)}, queries, args.k
        )
    finally:
        kb.close()
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    metrics = list(result.metrics("dense"))
    print(f"{'':8}" + "".join(f"{m:>11}" for m in metrics) + f"   ({result.queries} queries)")
    for name, values in result.searchers:
        print(f"{name:8}" + "".join(f"{values[m]:>11.3f}" for m in metrics))
    return 0
