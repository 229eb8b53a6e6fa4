"""How long a search's query embedding waits while the ingest embeds: OpenVINO's small-request model vs none.

    .venv/bin/python bench/query_during_ingest.py [--rounds 4] [--queries 20] [--no-write]

One process, the default embedder (OpenVINO, ``[embedding]`` defaults). A thread embeds batches of
32 Python-docs passages without pause, as the watcher's ingest does; meanwhile one-text queries are
embedded 50 ms apart and timed. Two arms take turns each round: "small model" (the default: a
request of up to ``OpenVinoEncoder.SMALL_REQUEST`` texts runs on its own one-thread compiled model)
and "shared model" (``SMALL_REQUEST = 0``: the query queues on the bulk model's stream behind the
batch in progress, as before). Reports the median and p95 query latency per arm and their ratio.
Writes the section "## Query embedding during ingest" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from common import DATA, machine, require, write_section

from knowledge.config import KnowledgeConfig
from knowledge.embedding import SentenceTransformerEmbedder

HEADING = "## Query embedding during ingest"


def timed_queries(embedder: SentenceTransformerEmbedder, batch: list[str], n: int) -> list[float]:
    stop = threading.Event()

    def ingest() -> None:
        while not stop.is_set():
            embedder.embed_batch(batch)

    worker = threading.Thread(target=ingest)
    worker.start()
    time.sleep(0.5)
    out = []
    for i in range(n):
        t = time.perf_counter()
        embedder.embed_batch([f"how do I open a file for reading, question {i}?"])
        out.append(time.perf_counter() - t)
        time.sleep(0.05)
    stop.set()
    worker.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    files = sorted(require(DATA / "pydocs").rglob("*.rst.txt"))[:32]
    batch = [p.read_text(encoding="utf-8")[:1500] for p in files]  # ~256-token passages, as chunks are
    config = KnowledgeConfig().embedding
    embedder = SentenceTransformerEmbedder(config)
    encoder = embedder._loaded()  # noqa: SLF001 - the arm switches the encoder's small-request limit
    default_limit = encoder.SMALL_REQUEST
    embedder.embed_batch(["warm up"])
    embedder.embed_batch(batch)
    arms = {"small model (default)": default_limit, "shared model": 0}
    latencies: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, limit in arms.items():
            encoder.SMALL_REQUEST = limit
            latencies[name] += timed_queries(embedder, batch, args.queries)
    encoder.SMALL_REQUEST = default_limit
    shared = statistics.median(latencies["shared model"])
    rows = ["| arm | query p50 (s) | query p95 (s) | p50 vs shared model |", "| --- | ---: | ---: | ---: |"]
    for name, values in latencies.items():
        ordered = sorted(values)
        p50, p95 = statistics.median(values), ordered[round(0.95 * (len(ordered) - 1))]
        rows.append(f"| {name} | {p50:.3f} | {p95:.3f} | {p50 / shared:.2f}× |")
    print("\n".join(rows))
    if not args.no_write:
        write_section(HEADING, f"""`.venv/bin/python bench/query_during_ingest.py --rounds {args.rounds} --queries {args.queries}` \
({machine()}).

The default embedder ({config.backend} {config.dtype}). A thread embeds batches of 32 Python-docs passages
without pause (what the watcher's ingest does); one-text queries are embedded 50 ms apart and timed,
{args.rounds} rounds × {args.queries} queries per arm, the arms taking turns. "Shared model": the query
queues on the one compiled model's stream behind the batch in progress (before); "small model": requests of
up to {default_limit} texts run on a compiled model of their own with one thread
(knowledge/embedding_runtimes.py).

{chr(10).join(rows)}

This is what made searches slow while an ingest ran (see the load section): a search waited for the
ingest's embedding batch. In-process, with 8 answers generating and the Python docs ingesting, a query's
embedding took 0.76 s (p50) on the shared model.
""")


if __name__ == "__main__":
    main()
