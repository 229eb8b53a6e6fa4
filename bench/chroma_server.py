"""The dense index embedded (PersistentClient) vs on a `chroma run` server (HttpClient), same machine.

    .venv/bin/python bench/chroma_server.py [--vectors 100000] [--queries 200] [--no-write]

Both go through `knowledge.dense.DenseIndex`, as a sync and a search do: upserts in its batches of
1,000, top-50 searches (the retriever's candidates) with and without an ``allowed`` id filter, one
edited file (remove 20 chunk ids, add 20) and ``count()``. Vectors: 384-d (MiniLM's size), 2,000
random centres plus Gaussian noise (σ = 0.025 per dimension), normalised, so HNSW sees clusters;
queries are further noisy copies of stored vectors. The server is started by
scripts/chroma_server.py on 127.0.0.1 and runs on the same 2 cores, so the numbers show the cost of
the HTTP hop and the server process, not of a network.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import Timer, machine, percentiles_ms, write_section

from knowledge.config import IndexConfig
from knowledge.dense import DenseIndex
from scripts.chroma_server import ChromaServer

DIM = 384
HEADING = "## Dense index: embedded Chroma vs a Chroma server"


def vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)  # (C, D)
    out = centres[rng.integers(0, len(centres), n)] / np.sqrt(DIM)  # (N, D), rows of norm about 1
    out += rng.normal(0, 0.025, (n, DIM)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)  # (N, D)


def measure(dense: DenseIndex, data: np.ndarray, queries: np.ndarray, rng: np.random.Generator) -> dict:
    ids = [f"c{i}" for i in range(len(data))]
    docs = [f"d{i // 20}" for i in range(len(data))]
    with Timer() as t:
        dense.upsert(ids, data, docs)
    out = {"upsert_per_s": len(data) / t.seconds}
    print(f"upserted {len(data):,} in {t.seconds:.1f} s", flush=True)
    dense.search(queries[0], 50)  # warm up
    times = []
    for q in queries:
        with Timer() as t:
            dense.search(q, 50)
        times.append(t.seconds)
    out["search"] = percentiles_ms(times)
    allowed = [ids[i] for i in rng.choice(len(ids), 2000, replace=False)]
    times = []
    for q in queries[:50]:
        with Timer() as t:
            dense.search(q, 50, allowed)
        times.append(t.seconds)
    out["filtered"] = percentiles_ms(times)
    edits = []
    for i in range(20):
        doc = ids[i * 20 : i * 20 + 20]
        with Timer() as t:
            dense.delete(doc)
            dense.upsert([f"{c}-v2" for c in doc], data[i * 20 : i * 20 + 20], docs[i * 20 : i * 20 + 20])
        edits.append(t.seconds)
    out["edit"] = percentiles_ms(edits)
    counts = []
    for _ in range(50):
        with Timer() as t:
            dense.count()
        counts.append(t.seconds)
    out["count"] = percentiles_ms(counts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = vectors(args.vectors, rng)  # (N, D)
    picks = data[rng.integers(0, len(data), args.queries)]
    queries = picks + rng.normal(0, 0.02, picks.shape).astype(np.float32)  # (Q, D)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-chroma-") as tmp:
        tmp = Path(tmp)
        results["embedded (PersistentClient)"] = measure(DenseIndex(IndexConfig(), tmp / "embedded"), data, queries, rng)
        with ChromaServer(tmp / "server-data") as server:
            config = IndexConfig(chroma="http", chroma_host=server.host, chroma_port=server.port)
            results["`chroma run` server on 127.0.0.1 (HttpClient)"] = measure(
                DenseIndex(config, tmp / "client"), data, queries, rng)
    rows = "\n".join(
        f"| {name} | {r['upsert_per_s']:,.0f} | {r['search'][0]:.2f} | {r['search'][1]:.2f} | "
        f"{r['filtered'][0]:.2f} | {r['edit'][0]:.1f} | {r['count'][0]:.2f} |"
        for name, r in results.items()
    )
    text = f"""`.venv/bin/python bench/chroma_server.py --vectors {args.vectors} --queries {args.queries}`; {machine()}.

{args.vectors:,} vectors of 384 dimensions (clustered, normalised; latencies, not quality) through
`knowledge.dense.DenseIndex`; the server is a real `chroma run` started by scripts/chroma_server.py on
the same cores. Search: top 50 (the retriever's candidates), {args.queries} queries; filtered: top 50
among 2,000 allowed ids (a folder filter), 50 queries; one edited file: delete its 20 chunk ids, add 20.

| dense index | upsert (vectors/s, batches of 1,000) | p50 search (ms) | p95 search (ms) | p50 filtered search (ms) | p50 one edited file (ms) | p50 count() (ms) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}
"""
    print(text)
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
