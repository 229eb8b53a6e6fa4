"""Faster embedding at equal recall? fp32 vs bf16 vs int8 dynamic quantization vs ONNX Runtime (fp32, int8).

    .venv/bin/python bench/embedding_speed.py --data-dir DIR [--sample 512] [--variants float32,int8,...]
                                               [--as-is-only] [--no-write]

Uses the pydocs index of `bench/fusion_sweep.py --data-dir DIR` (same layout as `footnotes --data-dir
DIR eval retrieval`), building it if missing, and the same two conditions (FAQ questions as is, and
with their headings stripped from the corpus).

- Speed: the same random sample of chunks embedded by every variant with batch size 32, in
  interleaved rounds (round r runs every variant on slice r) so that load from other processes on
  this shared machine hits every variant alike. Reported as chunks/s, model tokens/s and the ratio
  to the first variant (fp32).
- Quality, only for variants faster than fp32: every chunk of the index embedded by the variant,
  exact cosine top 50 per question: dense R@5 and MRR@10, hybrid R@5 (fused with the index's BM25
  by the default fusion), and the mean cosine to the fp32 vectors. fp32 uses the index's own vectors.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from common import DATA, machine, publish, require
from fusion_sweep import copy_index, strip_question_headings
from fusion_sweep import open_corpus as fs_open_corpus

from knowledge.config import EmbeddingConfig, KnowledgeConfig
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.evaluation import read_queries, retrieval_metrics
from knowledge.fusion import FUSIONS
from knowledge.kb import KnowledgeBase
from knowledge.types import Chunk

HEADING = "## Embedding speed and recall by precision (fp32, bf16, int8, ONNX)"
BATCH = 32

Encode = Callable[[Sequence[str]], np.ndarray]


# -- the variants: each returns encode(texts) -> (N, D) unit-length float32 -----------------------------
def st_variant(dtype: str) -> Encode:
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(dtype=dtype))
    return lambda texts: embedder.embed(list(texts), BATCH)


def onnx_variant(workdir: Path, int8: bool = False) -> Encode:
    """The same MiniLM exported with torch.onnx (TorchScript exporter), run by ONNX Runtime, mean-pooled.

    ``int8``: the exported model with ONNX Runtime's dynamic int8 quantization of its weights."""
    import onnxruntime as ort
    import torch

    st = SentenceTransformerEmbedder(EmbeddingConfig()).model
    hf, tok = st[0].auto_model, st.tokenizer
    max_len = st.max_seq_length
    path = workdir / "minilm.onnx"
    if not path.exists():

        class LastHiddenState(torch.nn.Module):
            def __init__(self, model) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out.last_hidden_state  # (B, T, D)

        names = ["input_ids", "attention_mask", "token_type_ids"]
        dummy = tok(["a short text", "a slightly longer text for the export"], return_tensors="pt", padding=True)
        torch.onnx.export(
            LastHiddenState(hf).eval(), tuple(dummy[n] for n in names), str(path), input_names=names, output_names=["last_hidden_state"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "last_hidden_state": {0: "batch", 1: "tokens"}},
            opset_version=17, dynamo=False,
        )
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = workdir / "minilm-int8.onnx"
        if not quantized.exists():
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        path = quantized
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode_batch(texts: Sequence[str]) -> np.ndarray:
        enc = tok(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="np")
        feeds = {n: enc[n].astype(np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = session.run(None, feeds)[0]  # (B, T, D)
        mask = feeds["attention_mask"][..., None].astype(np.float32)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)  # (B, D)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def encode(texts: Sequence[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # as Embedder.embed does
        out = np.zeros((len(texts), hf.config.hidden_size), np.float32)  # (N, D)
        for lo in range(0, len(texts), BATCH):
            idx = order[lo : lo + BATCH]
            out[idx] = encode_batch([texts[i] for i in idx])
        return out

    return encode


VARIANTS: dict[str, Callable[[Path], Encode]] = {
    "float32": lambda _: st_variant("float32"),
    "bfloat16": lambda _: st_variant("bfloat16"),
    "int8": lambda _: st_variant("int8"),
    "onnx": onnx_variant,
    "onnx-int8": lambda workdir: onnx_variant(workdir, int8=True),
}


def build_variants(names: Sequence[str], workdir: Path) -> dict[str, Encode]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}: use one of {', '.join(VARIANTS)}")
    return {name: VARIANTS[name](workdir) for name in names}


# -- measuring ------------------------------------------------------------------------------------
def speed(variants: dict[str, Encode], texts: list[str], rounds: int) -> dict[str, float]:
    """Seconds each variant took for ``texts``, measured in interleaved rounds over slices of them."""
    for encode in variants.values():
        encode(texts[:BATCH])  # warm-up
    total = dict.fromkeys(variants, 0.0)
    step = -(-len(texts) // rounds)
    for r in range(rounds):
        part = texts[r * step : (r + 1) * step]
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            t = time.perf_counter()
            variants[name](part)
            total[name] += time.perf_counter() - t
    return total


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


def notes(seconds: dict[str, float], quality: dict, first: str, conds: list[str], default: str) -> str:
    out = [f"- Default: `embedding.dtype = \"{default}\"` (knowledge/config.py): the fastest variant that keeps "
           "hybrid recall (what search serves) in both conditions; dense-only numbers are shown as well. One "
           "question is 0.006."]
    for name, q in quality.items():
        if name == first or not q:
            continue
        hybrid = " / ".join(f"{q[f'hybrid@5 ({c})']:.3f} vs {quality[first][f'hybrid@5 ({c})']:.3f}" for c in conds)
        dense = " / ".join(f"{q[f'dense@5 ({c})']:.3f} vs {quality[first][f'dense@5 ({c})']:.3f}" for c in conds)
        out.append(f"- {name}: {seconds[first] / seconds[name]:.2f}× the speed of {first}; hybrid R@5 {hybrid}, "
                   f"dense-only R@5 {dense} ({' / '.join(conds)}).")
    slower = [n for n in seconds if n != first and seconds[n] > seconds[first]]
    if slower:
        out.append(f"- {', '.join(slower)}: slower than {first} on this CPU (torch 2.13, avx512_bf16 but no AMX), "
                   "so they cannot win.")
    out.append("- int8 = `torch.ao.quantization.quantize_dynamic` of every Linear layer with per-channel weight "
               "scales; per-tensor scales (the first try) gave a mean cosine of 0.92 to fp32 instead of 0.98. "
               "torch marks `torch.ao.quantization` deprecated in favour of torchao; it works in the pinned 2.13.")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "footnotes-bench")
    ap.add_argument("--corpus", type=Path, default=DATA / "pydocs")
    ap.add_argument("--queries", type=Path, default=DATA / "pyfaq.jsonl")
    ap.add_argument("--variants", default="float32,bfloat16,int8,onnx,onnx-int8", help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--sample", type=int, default=512, help="chunks in the speed sample")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--as-is-only", action="store_true", help="skip the headings-stripped condition")
    ap.add_argument("--skip-recall", action="store_true")
    ap.add_argument("--min-speedup", type=float, default=1.1,
                    help="measure recall only for variants at least this much faster than the first on the sample")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    config = KnowledgeConfig()
    queries = read_queries(require(args.queries))
    conds = conditions(args, queries)
    workdir = args.data_dir / "embedding-variants"
    workdir.mkdir(parents=True, exist_ok=True)
    variants = build_variants(args.variants.split(","), workdir)
    first = next(iter(variants))

    kb = fs_open_corpus(config, args.data_dir, conds[0][1])
    chunks = sorted(kb.store.manifest.chunks(kb.store.manifest.all_chunk_ids()).values(), key=lambda c: c.chunk_id)
    tokenizer = kb.store.embedder.model.tokenizer
    sample = [c.index_text for c in random.Random(0).sample(chunks, min(args.sample, len(chunks)))]
    n_tokens = sum(min(len(ids), 256) for ids in tokenizer(sample, add_special_tokens=True)["input_ids"])
    kb.close()
    seconds = speed(variants, sample, args.rounds)
    print({k: f"{len(sample) / v:.1f} chunks/s" for k, v in seconds.items()}, flush=True)

    measured = [n for n in variants if n == first or seconds[first] / seconds[n] >= args.min_speedup]
    caches = {n: VectorCache(variants[n]) for n in measured}
    quality: dict[str, dict[str, float]] = {n: {} for n in measured}
    n_chunks = 0
    for ci, (cond, folder) in enumerate([] if args.skip_recall else conds):
        if ci > 0:
            copy_index(args.data_dir, conds[0][1], folder)
        kb = fs_open_corpus(config, args.data_dir, folder)
        chunks = sorted(kb.store.manifest.chunks(kb.store.manifest.all_chunk_ids()).values(), key=lambda c: c.chunk_id)
        texts = [c.index_text for c in chunks]
        reference = None
        for name in measured:
            t = time.perf_counter()
            if name == first and first == config.embedding.dtype:
                vectors, _ = kb.store.embed_chunks(chunks)  # the index's own vectors, from its embedding cache
            else:
                vectors = caches[name].vectors(texts)  # (N, D)
            if ci == 0:
                quality[name]["full_pass_s"] = time.perf_counter() - t
            reference = vectors if reference is None else reference
            qv = variants[name]([q.question for q in queries])  # (Q, D)
            for metric, value in recall(vectors, chunks, kb, queries, qv).items():
                quality[name][f"{metric} ({cond})"] = value
            if ci == 0:
                quality[name]["cos"] = float(np.mean(np.sum(vectors * reference, axis=1)))
            print(cond, name, {k: round(v, 3) for k, v in quality[name].items()}, flush=True)
        if ci == 0:
            n_chunks = len(chunks)
        kb.close()

    base = seconds[first]
    metrics = [f"{m} ({c})" for c, _ in conds for m in ("dense@5", "dense_mrr", "hybrid@5")]
    rows = []
    for name, s in seconds.items():
        q = quality.get(name, {})
        cells = [f"{len(sample) / s:.1f}", f"{n_tokens / s:,.0f}", f"{base / s:.2f}×"]
        cells += [f"{q[m]:.3f}" if m in q else "–" for m in metrics + ["cos"]]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    head = ("| variant | chunks/s | tokens/s | speed vs " + first + " | "
            + " | ".join(m.replace("dense@5", "dense R@5").replace("dense_mrr", "dense MRR@10").replace("hybrid@5", "hybrid R@5")
                         for m in metrics) + " | cos |")
    section = (
        f"`.venv/bin/python bench/embedding_speed.py --data-dir DIR --sample {args.sample}`; {machine()}.\n\n"
        f"MiniLM-L6 (the packaged model), batch size {BATCH}, torch threads = cores. **Speed**: {len(sample)} random "
        f"chunks of the pydocs index ({n_tokens:,} model tokens), every variant on the same slices in {args.rounds} "
        f"interleaved rounds (load from other processes hits all alike). **Quality**: every chunk of the index "
        f"({'' if args.skip_recall else f'{n_chunks:,} '}chunks) embedded by the variant, exact cosine search, the "
        f"{len(queries)} FAQ questions, in the two conditions of the retrieval-quality section; hybrid = the "
        f"default fusion with the index's BM25. `cos` = mean cosine between a chunk's vector and its {first} vector. "
        f"Quality is measured only for variants at least {args.min_speedup}× faster than {first} on the sample "
        "(a slower variant cannot win).\n\n"
        + head + "\n| --- |" + " ---: |" * (4 + len(metrics)) + "\n" + "\n".join(rows) + "\n\n"
        + notes(seconds, quality, first, [c for c, _ in conds], config.embedding.dtype)
    )
    publish(HEADING, section, write=not args.no_write)


if __name__ == "__main__":
    main()
