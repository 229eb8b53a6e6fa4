"""Search latency at 100k chunks: rank-bm25 vs our BM25 vs dense (Chroma) vs hybrid, p50/p95.

    .venv/bin/python bench/search_latency.py [--chunks 100000] [--real 5000] [--queries 200] [--no-write]

Corpus texts: the passages of `bench/bm25_search.py` (60-word pieces of the Python 3.11 docs, then
varied copies of them) up to ``--chunks``. Vectors: embedding 100k chunks takes well over ten
minutes on this machine, so only the first ``--real`` passages are embedded (the real model, the
configured dtype); every further chunk gets a copy of one of those vectors plus Gaussian noise
(σ = 0.025 per dimension, cosine ≈ 0.9 to its original), renormalised. So the dense index has the
right size and a realistic clustered distribution, but beyond the first ``--real`` chunks a vector
does not describe its text: the numbers are latencies, not quality.

Everything goes through the real store: the chunks are written to the manifest, Chroma
(PersistentClient, HNSW cosine) and our BM25 index exactly as a sync would, and dense and hybrid are
timed through `HybridRetriever` with the query embedding included (hits assembled from the manifest).
rank-bm25 and our BM25 are timed at the index (same tokens, top 10). Queries: the FAQ questions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bm25_search import corpus as passage_corpus
from bm25_search import queries as faq_queries
from common import Timer, machine, percentiles_ms, publish

from knowledge.config import KnowledgeConfig
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.manifest import DocumentRecord, now
from knowledge.retrieval import HybridRetriever
from knowledge.store import KnowledgeStore
from knowledge.text_tokens import tokenize
from knowledge.types import Chunk

HEADING = "## Search latency at 100k chunks (BM25, dense, hybrid)"
K = 10
NOISE = 0.025


def vectors_for(n: int, real: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, D): the real vectors, then noisy renormalised copies of them, cycling."""
    rng = np.random.default_rng(seed)
    p = len(real)
    out = np.empty((n, real.shape[1]), np.float32)  # (n, D)
    out[: min(n, p)] = real[: min(n, p)]
    for lo in range(p, n, p):
        hi = min(n, lo + p)
        block = real[: hi - lo] + rng.normal(0, NOISE, (hi - lo, real.shape[1])).astype(np.float32)  # (b, D)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def as_documents(items: list[tuple[str, str]]) -> dict[str, list[tuple[int, Chunk]]]:
    """Group corpus items (id "doc#copy.i", text) into documents "copyC/doc": (row in items, chunk)."""
    docs: dict[str, list[tuple[int, Chunk]]] = defaultdict(list)
    ends: dict[str, int] = defaultdict(int)
    for row, (cid, text) in enumerate(items):
        doc, _, rest = cid.partition("#")
        doc_id = f"copy{rest.split('.')[0]}/{doc}"
        start = ends[doc_id]
        ends[doc_id] = start + len(text) + 2
        docs[doc_id].append((row, Chunk(f"c{row:07d}", doc_id, start, start + len(text), text)))
    return docs


def build_store(data_dir: Path, config: KnowledgeConfig, embedder, items, vectors: np.ndarray) -> KnowledgeStore:
    """A store holding ``items`` with ``vectors`` (N, D), written as a sync writes (indexes, then manifest)."""
    store = KnowledgeStore(config, data_dir, embedder)
    store.manifest.set_meta("embedding_model", embedder.name)
    batch: list[tuple[str, list[tuple[int, Chunk]]]] = []
    for doc in as_documents(items).items():
        batch.append(doc)
        if sum(len(c) for _, c in batch) >= 5000:
            _write(store, batch, vectors)
            batch = []
    _write(store, batch, vectors)
    store.save()
    return store


def _write(store: KnowledgeStore, docs: list[tuple[str, list[tuple[int, Chunk]]]], vectors: np.ndarray) -> None:
    rows = [r for _, chunks in docs for r, _ in chunks]
    store.add_chunks([c for _, chunks in docs for _, c in chunks], vectors[rows])  # (b, D)
    for doc_id, chunks in docs:
        record = DocumentRecord(doc_id, "folder", "0", "v", "indexed", "", now())
        store.manifest.replace_document(record, [c for _, c in chunks])


def timed(search: Callable[[str], object], qs: list[str]) -> tuple[float, float, float]:
    for q in qs[:3]:
        search(q)  # warm-up
    seconds = []
    for q in qs:
        t = time.perf_counter()
        search(q)
        seconds.append(time.perf_counter() - t)
    return percentiles_ms(seconds)


def time_rank_bm25(items: list[tuple[str, str]], qs: list[str]) -> tuple[float, float, float]:
    """rank-bm25 over the same tokens, top K (what a user would otherwise reach for)."""
    from rank_bm25 import BM25Okapi

    index = BM25Okapi([tokenize(text) for _, text in items], k1=1.5, b=0.75)
    return timed(lambda q: np.argpartition(-index.get_scores(tokenize(q)), K)[:K], qs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--real", type=int, default=5000, help="passages really embedded; the rest are noisy copies")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rank-bm25-queries", type=int, default=50, help="rank-bm25 is slow: time only this many")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()

    config = KnowledgeConfig()
    items = passage_corpus(args.chunks)
    qs = faq_queries(args.queries)
    embedder = SentenceTransformerEmbedder(config.embedding)
    n_real = min(args.real, len(items))
    with Timer() as t_embed:
        real = embedder.embed([text for _, text in items[:n_real]], config.embedding.batch_size)  # (P, D)
    vectors = vectors_for(len(items), real)
    print(f"{len(items)} chunks; embedded {n_real} real passages in {t_embed.seconds:.0f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="footnotes-search-") as tmp:
        with Timer() as t_build:
            store = build_store(Path(tmp), config, embedder, items, vectors)
        status = store.status()
        print(f"store built in {t_build.seconds:.0f} s: {status.to_json()['chunks']}", flush=True)
        retriever = HybridRetriever(store, config.retrieval)
        results = {}
        results["rank-bm25 `BM25Okapi` (index only; baseline)"] = time_rank_bm25(items, qs[: args.rank_bm25_queries])
        results["our BM25 (index only)"] = timed(lambda q: store.bm25.search(q, K), qs)
        results["our BM25 via the retriever (hits from the manifest)"] = timed(
            lambda q: retriever.search_bm25(q, K), qs)
        results["query embedding alone"] = timed(lambda q: embedder.embed_batch([q]), qs)
        vec = embedder.embed_batch(["warm-up"])[0]
        results["Chroma HNSW query alone (top 50)"] = timed(
            lambda q: store.dense.search(vec, config.retrieval.candidates), qs)
        results["dense via the retriever (embedding included)"] = timed(lambda q: retriever.search_dense(q, K), qs)
        results["**hybrid** via the retriever (embedding included)"] = timed(lambda q: retriever.search(q, K), qs)
        store.close()

    rows = "\n".join(f"| {name} | {p50:.1f} | {p95:.1f} | {mx:.1f} |" for name, (p50, p95, mx) in results.items())
    hybrid_p50 = results["**hybrid** via the retriever (embedding included)"][0]
    section = (
        f"`.venv/bin/python bench/search_latency.py --chunks {args.chunks} --real {args.real}`; {machine()}.\n\n"
        f"{status.chunks_manifest:,} chunks in the manifest, Chroma ({status.chunks_chroma:,}) and BM25 "
        f"({status.chunks_bm25:,}); texts are 60-word Python-docs passages and varied copies (as in "
        f"bm25_search.py). **Vectors: {n_real:,} real MiniLM-L6 ({config.embedding.dtype}) embeddings; the other "
        f"{len(items) - n_real:,} are noisy copies of them** (σ = {NOISE}/dim, renormalised): sizes and "
        f"distribution are realistic, but those vectors do not describe their texts, so only latency is "
        f"measured here. {len(qs)} FAQ questions (rank-bm25: the first {min(args.rank_bm25_queries, len(qs))}), "
        f"top {K}, each retriever contributing {config.retrieval.candidates} candidates to the "
        f"{config.retrieval.fusion} fusion; one query at a time.\n\n"
        "| search | p50 (ms) | p95 (ms) | max (ms) |\n| --- | ---: | ---: | ---: |\n" + rows + "\n\n"
        f"- Goal: hybrid p50 under 50 ms with the query embedding: **{hybrid_p50:.1f} ms** "
        f"({'met' if hybrid_p50 < 50 else 'missed'}).\n"
        f"- Building the store (manifest + Chroma upserts + BM25, no embedding): {t_build.seconds:.0f} s.\n"
    )
    publish(HEADING, section, write=not args.no_write)


if __name__ == "__main__":
    main()
