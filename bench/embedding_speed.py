"""Faster embedding at equal recall? Every embedding.backend (torch, ONNX Runtime, OpenVINO) at every precision.

    .venv/bin/python bench/embedding_speed.py --data-dir DIR [--sample 512] [--variants torch-float32,...]
                                               [--recall openvino-bfloat16,...] [--as-is-only] [--no-write]

Uses the pydocs index of `bench/fusion_sweep.py --data-dir DIR` (same layout as `footnotes --data-dir
DIR eval retrieval`), building it if missing (with the embedder of --index-variant, whose vectors the
index's embedding cache then holds), and the same two conditions (FAQ questions as is, and with their
headings stripped from the corpus).

- Speed: the same random sample of chunks embedded by every variant (the product's embedder,
  `SentenceTransformerEmbedder(EmbeddingConfig(backend=..., dtype=...))`, batch size 32), in
  interleaved rounds (round r runs every variant on slice r, the order reversed every other round)
  so that load from other processes on this shared machine hits every variant alike. Reported as
  chunks/s, model tokens/s, the ratio to the first variant (torch fp32) and to torch int8, and the
  mean and minimum cosine of the sample's vectors to the first variant's.
- Quality, for the variants in --recall: every chunk of the index embedded by the variant, exact
  cosine top 50 per question: dense R@5 and MRR@10, hybrid R@5 (fused with the index's BM25 by the
  default fusion). The index's own variant reads its vectors from the embedding cache.
- Conversion: the seconds each variant took to load the first time (building its cached ONNX / IR
  file: --cache-dir, a fresh temp dir by default) and the second time (from that cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from common import DATA, count_tokens, machine, publish, require
from fusion_sweep import copy_index, strip_question_headings
from fusion_sweep import open_corpus as fs_open_corpus

from knowledge.config import EmbeddingConfig, KnowledgeConfig
from knowledge.embedding import BACKENDS, SentenceTransformerEmbedder
from knowledge.evaluation import read_queries, retrieval_metrics
from knowledge.fusion import FUSIONS
from knowledge.kb import KnowledgeBase
from knowledge.types import Chunk

HEADING = "## Embedding speed and recall by backend and precision (torch, ONNX Runtime, OpenVINO)"
BATCH = 32

Encode = Callable[[Sequence[str]], np.ndarray]
VARIANTS = [f"{backend}-{dtype}" for backend, b in BACKENDS.items() for dtype in b.precisions]


def embedding_config(variant: str, cache_dir: Path) -> EmbeddingConfig:
    backend, dtype = variant.split("-", 1)
    return EmbeddingConfig(backend=backend, dtype=dtype, batch_size=BATCH, cache_dir=str(cache_dir))


def build_variants(names: Sequence[str], cache_dir: Path) -> tuple[dict[str, Encode], dict[str, tuple[float, float]]]:
    """Each variant's encode(texts) -> (N, D), and its (first, second) load seconds (export + load, load)."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}: use one of {', '.join(VARIANTS)}")
    out, loads = {}, {}
    for name in names:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            embedder = SentenceTransformerEmbedder(embedding_config(name, cache_dir))
            embedder.embed(["warm-up"])
            times.append(time.perf_counter() - t)
        loads[name] = (times[0], times[1])
        out[name] = lambda texts, e=embedder: e.embed(list(texts), BATCH)
        print(f"{name}: loaded in {times[0]:.1f} s, again {times[1]:.1f} s", flush=True)
    return out, loads


# -- measuring ------------------------------------------------------------------------------------
def speed(variants: dict[str, Encode], texts: list[str], rounds: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seconds each variant took for ``texts``, measured in interleaved rounds over slices of them, and
    each variant's vectors of ``texts`` (N, D)."""
    for encode in variants.values():
        encode(texts[:BATCH])  # warm-up
    total = dict.fromkeys(variants, 0.0)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    step = -(-len(texts) // rounds)
    for r in range(rounds):
        part = texts[r * step : (r + 1) * step]
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            t = time.perf_counter()
            parts[name].append(variants[name](part))  # (n, D)
            total[name] += time.perf_counter() - t
    return total, {name: np.concatenate(p) for name, p in parts.items()}


def recall(vectors: np.ndarray, chunks: list[Chunk], kb: KnowledgeBase, queries, qv: np.ndarray,
           n: int = 50) -> dict[str, float]:
    """Dense R@1/R@5/MRR@10 and hybrid R@5 with exact cosine search over ``vectors`` (N, D); ``qv`` (Q, D)."""
    config = kb.config.retrieval
    fuse = FUSIONS[config.fusion]
    sims = qv @ vectors.T  # (Q, N)
    source = {c.chunk_id: c.doc_id for c in chunks}
    dense_ranks, hybrid_ranks = [], []
    for qi, q in enumerate(queries):
        top = np.argsort(-sims[qi])[:n]
        dense = [(chunks[i].chunk_id, float(sims[qi, i])) for i in top]
        sparse = kb.retriever.search_bm25(q.question, n)
        src = {**source, **{h.chunk_id: h.doc_id for h in sparse}}
        fused = fuse([dense, [(h.chunk_id, h.score) for h in sparse]],
                     [config.dense_weight, 1 - config.dense_weight], config.rrf_k)
        order = sorted(fused, key=lambda c: (-fused[c], c))
        for ranks, ranking in ((dense_ranks, [c for c, _ in dense]), (hybrid_ranks, order)):
            ranks.append(next((i for i, c in enumerate(ranking[:10], 1) if src[c] in q.gold), None))
    d, h = retrieval_metrics(dense_ranks, (1, 5)), retrieval_metrics(hybrid_ranks, (1, 5))
    return {"dense@1": d["recall@1"], "dense@5": d["recall@5"], "dense_mrr": d["mrr@10"], "hybrid@5": h["recall@5"]}


class VectorCache:
    """One variant's vectors by chunk text, so the second condition embeds only the texts it changed."""

    def __init__(self, encode: Encode) -> None:
        self.encode = encode
        self.by_text: dict[str, np.ndarray] = {}

    def vectors(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.by_text})
        if missing:
            self.by_text.update(zip(missing, self.encode(missing)))
        return np.stack([self.by_text[t] for t in texts])  # (N, D)


def conditions(args, queries) -> list[tuple[str, Path]]:
    corpus = require(args.corpus).resolve()
    out = [("as is", corpus)]
    if not args.as_is_only:
        out.append(("headings stripped", strip_question_headings(
            corpus, queries, args.data_dir / "corpora" / f"{corpus.name}-noheadings")))
    return out


def cosines(vectors: dict[str, np.ndarray], first: str) -> dict[str, tuple[float, float]]:
    """(mean, min) cosine of each variant's unit vectors to the first's, row by row."""
    return {name: (float(np.mean(c := np.sum(v * vectors[first], axis=1))), float(np.min(c))) for name, v in vectors.items()}


def measure_recall(args, config: KnowledgeConfig, queries, conds, variants: dict[str, Encode],
                   names: list[str]) -> tuple[dict[str, dict[str, float]], int]:
    """For each variant of ``names``: its metrics in every condition; and the index's chunk count."""
    caches = {n: VectorCache(variants[n]) for n in names}
    quality: dict[str, dict[str, float]] = {n: {} for n in names}
    n_chunks = 0
    for ci, (cond, folder) in enumerate(conds):
        if ci > 0:
            copy_index(args.data_dir, conds[0][1], folder)
        kb = fs_open_corpus(config, args.data_dir, folder)
        chunks = sorted(kb.store.manifest.chunks(kb.store.manifest.all_chunk_ids()).values(), key=lambda c: c.chunk_id)
        texts = [c.index_text for c in chunks]
        for name in names:
            t = time.perf_counter()
            if name == args.index_variant:
                vectors, _ = kb.store.embed_chunks(chunks)  # the index's own vectors, from its embedding cache
            else:
                vectors = caches[name].vectors(texts)  # (N, D)
            if ci == 0:
                quality[name]["full_pass_s"] = time.perf_counter() - t
            qv = variants[name]([q.question for q in queries])  # (Q, D)
            for metric, value in recall(vectors, chunks, kb, queries, qv).items():
                quality[name][f"{metric} ({cond})"] = value
            print(cond, name, {k: round(v, 3) for k, v in quality[name].items()}, flush=True)
        n_chunks = n_chunks or len(chunks)
        kb.close()
    return quality, n_chunks


def table(args, seconds, cos, loads, quality, conds, n_tokens, n_sample) -> str:
    first = next(iter(seconds))
    metrics = [f"{m} ({c})" for c, _ in conds for m in ("dense@5", "dense_mrr", "hybrid@5")]
    label = {"dense@5": "dense R@5", "dense_mrr": "dense MRR@10", "hybrid@5": "hybrid R@5"}
    head = (f"| variant | chunks/s | tokens/s | speed vs {first} | speed vs torch-int8 | cos mean / min | "
            + " | ".join(label[m.split(" ")[0]] + " " + m.split(" ", 1)[1] for m in metrics)
            + " | first load s (converts) | load s |")
    rows = [head, "| --- |" + " ---: |" * (7 + len(metrics))]
    for name, s in seconds.items():
        q = quality.get(name, {})
        int8 = f"{seconds['torch-int8'] / s:.2f}×" if "torch-int8" in seconds else "–"
        cells = [f"{n_sample / s:.1f}", f"{n_tokens / s:,.0f}", f"{seconds[first] / s:.2f}×", int8,
                 f"{cos[name][0]:.5f} / {cos[name][1]:.5f}"]
        cells += [f"{q[m]:.3f}" if m in q else "–" for m in metrics]
        cells += [f"{loads[name][0]:.1f}", f"{loads[name][1]:.1f}"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def load_variant(name: str, cache_dir: Path) -> Encode:
    """A variant measured for recall only (not in the speed run)."""
    embedder = SentenceTransformerEmbedder(embedding_config(name, cache_dir))
    return lambda texts: embedder.embed(list(texts), BATCH)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "footnotes-bench")
    ap.add_argument("--corpus", type=Path, default=DATA / "pydocs")
    ap.add_argument("--queries", type=Path, default=DATA / "pyfaq.jsonl")
    ap.add_argument("--variants", default=",".join(["torch-float32", "torch-int8", *[v for v in VARIANTS if not v.startswith("torch")],
                                                    "torch-bfloat16"]), help=f"from {', '.join(VARIANTS)}; the first is the reference")
    ap.add_argument("--recall", default="torch-int8,openvino-bfloat16,openvino-int8",
                    help="variants whose recall is measured over the whole index")
    ap.add_argument("--index-variant", default="torch-int8", help="the embedder the pydocs index is built (or was built) with")
    ap.add_argument("--cache-dir", type=Path, default=None, help="converted models (default: a fresh temp dir)")
    ap.add_argument("--sample", type=int, default=512, help="chunks in the speed sample")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--as-is-only", action="store_true", help="skip the headings-stripped condition")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="footnotes-converted-") as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        config = dataclasses.replace(KnowledgeConfig(), embedding=embedding_config(args.index_variant, cache_dir))
        queries = read_queries(require(args.queries))
        conds = conditions(args, queries)
        variants, loads = build_variants(args.variants.split(","), cache_dir)
        first = next(iter(variants))

        kb = fs_open_corpus(config, args.data_dir, conds[0][1])
        chunks = sorted(kb.store.manifest.chunks(kb.store.manifest.all_chunk_ids()).values(), key=lambda c: c.chunk_id)
        sample = [c.index_text for c in random.Random(0).sample(chunks, min(args.sample, len(chunks)))]
        n_tokens = count_tokens(sample)
        kb.close()
        seconds, vectors = speed(variants, sample, args.rounds)
        cos = cosines(vectors, first)
        print({k: f"{len(sample) / v:.1f} chunks/s, cos {cos[k][0]:.5f}" for k, v in seconds.items()}, flush=True)
        names = [n for n in args.recall.split(",") if n]
        quality, n_chunks = measure_recall(args, config, queries, conds, {**variants, **{
            n: load_variant(n, cache_dir) for n in names if n not in variants}}, names) if names else ({}, 0)

    rows = table(args, seconds, cos, loads, quality, conds, n_tokens, len(sample))
    command = f"`.venv/bin/python bench/embedding_speed.py --data-dir DIR --sample {args.sample}`"
    section = (
        f"{command}; {machine()}.\n\n"
        f"MiniLM-L6 (the packaged model), batch size {BATCH}, each backend's default threads (2 cores). **Speed**: "
        f"{len(sample)} random chunks of the pydocs index ({n_tokens:,} model tokens), every variant on the same "
        f"slices in {args.rounds} interleaved rounds (load from other processes hits all alike); `cos` = mean / "
        f"minimum cosine of each chunk's vector to its {first} vector over that sample. **Quality** (variants "
        f"{', '.join(names) or 'none'}): every chunk of the index ({n_chunks:,} chunks) embedded by the variant, "
        f"exact cosine search, the {len(queries)} FAQ questions, in the two conditions of the retrieval-quality "
        "section; hybrid = the default fusion with the index's BM25. One question is 0.006. **Load**: the first "
        "load converts the packaged weights into the cache (ONNX file, OpenVINO IR) and loads it; the second "
        "reads the cached file (torch has nothing to convert).\n\n" + rows + "\n"
    )
    publish(HEADING, section, write=not args.no_write)


if __name__ == "__main__":
    main()
