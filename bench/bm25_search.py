"""BM25 search latency at 100k chunks: rank-bm25 (baseline) vs bm25s (numpy) vs knowledge.bm25.

    .venv/bin/python bench/bm25_search.py [--chunks 100000] [--queries 200]

Corpus: the Python 3.11 docs (``.dev-data/pydocs``, see docs/evaluation.md)
cut into 60-word passages, repeated with variation (20% of words dropped, 10% swapped for words of
another passage) up to ``--chunks``. Queries: the questions of ``.dev-data/pyfaq.jsonl``, cycled.
Every library gets the same tokens (knowledge.text_tokens.tokenize). Prints a markdown table and,
at the default 100k chunks, writes it into docs/benchmarks.md under its own heading.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import publish

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from knowledge.bm25 import BM25Index  # noqa: E402
from knowledge.text_tokens import tokenize  # noqa: E402

DATA = ROOT / ".dev-data"
HEADING = "## BM25 search latency at 100k chunks"
PASSAGE_WORDS = 60
K = 10


def passages() -> list[tuple[str, str]]:
    """(doc id, 60-word passage) of every docs file, in file order."""
    files = sorted((DATA / "pydocs").rglob("*.txt"))
    if not files:
        sys.exit(f"no docs under {DATA / 'pydocs'}: docs/evaluation.md says where the development data comes from")
    out = []
    for f in files:
        words = f.read_text(encoding="utf-8", errors="replace").split()
        rel = f.relative_to(DATA / "pydocs").as_posix()
        out += [(rel, " ".join(words[i : i + PASSAGE_WORDS])) for i in range(0, len(words), PASSAGE_WORDS)]
    return out


def corpus(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (chunk id, text): the passages once, then varied copies of them (ids "doc#copy.i")."""
    rng = random.Random(seed)
    base = passages()
    out = [(f"{doc}#0.{i}", text) for i, (doc, text) in enumerate(base)]
    copy = 0
    while len(out) < n:
        copy += 1
        for i in rng.sample(range(len(base)), len(base)):
            doc, text = base[i]
            other = base[rng.randrange(len(base))][1].split()
            words = [w if rng.random() > 0.1 else rng.choice(other) for w in text.split() if rng.random() > 0.2]
            out.append((f"{doc}#{copy}.{i}", " ".join(words)))
    return out[:n]


def queries(n: int) -> list[str]:
    faq = DATA / "pyfaq.jsonl"
    if not faq.exists():
        sys.exit(f"{faq} is missing: docs/evaluation.md says where the development data comes from")
    qs = [json.loads(line)["question"] for line in faq.read_text().splitlines() if line.strip()]
    return [qs[i % len(qs)] for i in range(n)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def latencies_ms(search, qs) -> list[float]:
    """Milliseconds of search(q) for each query, after two warm-up calls."""
    for q in qs[:2]:
        search(q)
    ms = []
    for q in qs:
        t = time.perf_counter()
        search(q)
        ms.append((time.perf_counter() - t) * 1000)
    return ms


def p50(ms: list[float]) -> float:
    return statistics.median(ms)


def p95(ms: list[float]) -> float:
    return float(np.percentile(ms, 95))


def bench_rank_bm25(tokens, q_tokens):
    from rank_bm25 import BM25Okapi

    model, build = timed(lambda: BM25Okapi(tokens, k1=1.5, b=0.75))

    def search(qt):
        scores = model.get_scores(qt)  # (N,)
        return np.argpartition(-scores, K)[:K]

    return build, latencies_ms(search, q_tokens)


def bench_bm25s(tokens, q_tokens):
    import bm25s

    def build():
        model = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        model.index(tokens, show_progress=False)
        return model

    model, build_s = timed(build)

    def search(qt):
        return model.retrieve([qt or [""]], k=K, show_progress=False, backend_selection="numpy", n_threads=1)

    return build_s, latencies_ms(search, q_tokens)


def bench_ours(chunks, qs, rounds: int = 30):
    index = BM25Index()
    _, build = timed(lambda: index.add_many(chunks))
    ms = latencies_ms(lambda q: index.search(q, K), qs)
    filtered = {  # p50 with an `allowed` filter: a broad one and a narrow one
        prefix: p50(latencies_ms(lambda q: index.search(q, K, allowed=lambda c: c.startswith(prefix)), qs))
        for prefix in ("library/", "faq/")
    }
    # One file edit: its 20 chunks removed, 20 new ones added (edited text), `rounds` times.
    rng = random.Random(1)
    edit_ms = []
    for r in range(rounds):
        start = rng.randrange(len(chunks) - 20)
        old = [cid for cid, _ in chunks[start : start + 20]]
        new = [(f"edited-{r}-{i}", text + " edited") for i, (_, text) in enumerate(chunks[start : start + 20])]
        t = time.perf_counter()
        index.remove_many(old)
        index.add_many(new)
        edit_ms.append((time.perf_counter() - t) * 1000)
        index.remove_many([cid for cid, _ in new])
        index.add_many(chunks[start : start + 20])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bm25.npz"
        _, save = timed(lambda: index.save(path))
        _, load = timed(lambda: BM25Index.load(path))
        size_mb = path.stat().st_size / 1e6
    # A folder deleted: 30% of the chunks at once, which triggers a compaction (> 25% dead).
    _, drop = timed(lambda: index.remove_many(cid for cid, _ in chunks[: len(chunks) * 3 // 10]))
    return dict(build=build, ms=ms, filtered=filtered, edit_ms=edit_ms,
                save=save, load=load, size_mb=size_mb, drop=drop)


def render(args, n_base: int, tokens, tok_s: float, rb, bs, ours) -> str:
    """The markdown section: command, date, table, notes. rb / bs: (build s, per-query ms)."""
    n_rb = len(rb[1])  # rank-bm25 timed on the first n_rb queries only: speed-ups compare those
    base = p50(rb[1])

    def row(name, build, ms, edit):
        return (f"| {name} | {build} | {p50(ms):.2f} | {p95(ms):.2f} | {base / p50(ms[:n_rb]):.1f}× | {edit} |")

    import bm25s

    lines = [
        "| index | build (s) | p50 query (ms) | p95 query (ms) | p50 speed-up vs rank-bm25 | one file edited: "
        "remove + add its 20 chunks |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        row(f"rank-bm25 `BM25Okapi` (baseline; {n_rb} queries)", f"{rb[0]:.1f}", rb[1],
            f"no add/remove: full rebuild, {rb[0]:.1f} s"),
        row(f"bm25s {bm25s.__version__}, numpy backend, method=lucene", f"{bs[0]:.1f}", bs[1],
            f"no add/remove: full rebuild, {bs[0]:.1f} s"),
        row("`knowledge.bm25.BM25Index` (chosen)", f"{ours['build']:.1f} incl. tokenizing", ours["ms"],
            f"{p50(ours['edit_ms']):.1f} ms (median of {len(ours['edit_ms'])})"),
    ]
    filters = ", ".join(f"`{prefix}`: {ms:.2f} ms" for prefix, ms in ours["filtered"].items())
    notes = [
        f"{len(tokens):,} chunks of ~{PASSAGE_WORDS} words of the Python 3.11 docs (the {n_base:,} passages, "
        f"then copies with 20% of words dropped and 10% swapped), "
        f"{sum(map(len, tokens)) / len(tokens):.0f} tokens/chunk after stopwords, "
        f"{sum(len(set(t)) for t in tokens):,} postings; {len(ours['ms'])} pyfaq questions, top-{K}.",
        f"The same tokens for all three. rank-bm25 and bm25s build times exclude tokenizing "
        f"({tok_s:.1f} s for the corpus); ours includes it.",
        f"Ours with an `allowed` filter (chunk id starts with ...), p50: {filters}.",
        f"Ours, removing 30% of the chunks at once (a deleted folder; triggers a compaction): {ours['drop']:.2f} s.",
        f"Ours, save / load of the whole index (.npz, no pickle): {ours['save']:.2f} s / {ours['load']:.2f} s, "
        f"{ours['size_mb']:.0f} MB.",
    ]
    command = f"`.venv/bin/python bench/bm25_search.py --chunks {args.chunks} --queries {args.queries}`"
    return (f"{command}, {datetime.date.today().isoformat()}, 2 shared CPU cores.\n\n"
            + "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rank-bm25-queries", type=int, default=50, help="rank-bm25 is slow: time only this many")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()

    chunks = corpus(args.chunks)
    qs = queries(args.queries)
    tokens, tok_s = timed(lambda: [tokenize(text) for _, text in chunks])
    q_tokens = [tokenize(q) for q in qs]
    print(f"{len(chunks)} chunks; tokenizing took {tok_s:.1f} s", flush=True)
    rb = bench_rank_bm25(tokens, q_tokens[: args.rank_bm25_queries])
    print(f"rank-bm25: p50 {p50(rb[1]):.1f} ms", flush=True)
    bs = bench_bm25s(tokens, q_tokens)
    print(f"bm25s: p50 {p50(bs[1]):.1f} ms", flush=True)
    ours = bench_ours(chunks, qs)
    section = render(args, len(passages()), tokens, tok_s, rb, bs, ours)
    heading = HEADING if args.chunks == 100_000 else f"## BM25 search latency at {args.chunks:,} chunks"
    publish(heading, section, write=args.chunks == 100_000 and not args.no_write)


if __name__ == "__main__":
    main()
