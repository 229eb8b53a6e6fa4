"""The knowledge store: the manifest, the dense index and the BM25 index of one data dir, kept in step.

The manifest is the truth; ``reconcile`` brings Chroma and BM25 back to it after a crash, an
interrupted ingest or a change of embedding model. The BM25 index lives in memory and is saved
atomically to ``bm25.npz`` after every sync.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bm25 import BM25Index
from .config import KnowledgeConfig
from .dense import DenseIndex
from .embedding import Embedder, text_hash
from .errors import IndexError_
from .manifest import Manifest
from .progress import NoProgress, Progress
from .types import INDEX_TEXT_VERSION, Chunk, Failure


@dataclass(frozen=True)
class Status:
    documents: int
    chunks_manifest: int
    chunks_chroma: int
    chunks_bm25: int
    failed: tuple[Failure, ...]
    last_sync: str | None

    def to_json(self) -> dict:
        return {
            "documents": self.documents,
            "chunks": {"manifest": self.chunks_manifest, "chroma": self.chunks_chroma, "bm25": self.chunks_bm25},
            "failed": [{"source": f.doc_id, "error": f.error} for f in self.failed],
            "last_sync": self.last_sync,
        }


class KnowledgeStore:
    """Manifest + Chroma + BM25 under ``data_dir``.

    ``lock`` guards each short index mutation and every BM25 search; ``sync_lock`` lets one sync
    run at a time without blocking searches while it embeds.
    """

    def __init__(self, config: KnowledgeConfig, data_dir: Path, embedder: Embedder, write: bool = True) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._writer_lock = _take_writer_lock(self.data_dir) if write else None
        self.embedder = embedder
        self.lock = threading.RLock()
        self.sync_lock = threading.RLock()
        self.manifest = Manifest(self.data_dir / "manifest.sqlite3")
        self.dense = DenseIndex(config.index, self.data_dir, embedder)
        self.bm25_path = self.data_dir / "bm25.npz"
        self.bm25 = self._load_bm25()

    def _load_bm25(self) -> BM25Index:
        if not self.bm25_path.exists():
            return BM25Index()
        try:
            return BM25Index.load(self.bm25_path)
        except IndexError_:
            return BM25Index()  # derived data: rebuilt from the manifest by reconcile

    def close(self) -> None:
        self.manifest.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # releases the flock
            self._writer_lock = None

    # -- writing ------------------------------------------------------------------------------
    def embed_chunks(self, chunks: Sequence[Chunk], progress: Progress | None = None) -> tuple[np.ndarray, int]:
        """Vectors (N, D) for chunks, from the embedding cache where the same text was embedded before.

        Returns the vectors and how many texts the model had to embed."""
        progress = progress or NoProgress()
        model = self.embedder.name
        hashes = [text_hash(c.index_text) for c in chunks]
        cached = self.manifest.cached_embeddings(model, hashes, self.embedder.dim)
        missing = sorted({h: c.index_text for h, c in zip(hashes, chunks) if h not in cached}.items())
        progress.start(len(missing), "embedding")
        if missing:
            vectors = self.embedder.embed([t for _, t in missing], self.config.embedding.batch_size, progress.advance)
            fresh = {h: v for (h, _), v in zip(missing, vectors)}
            self.manifest.cache_embeddings(model, fresh.items())
            cached.update(fresh)
        out = np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)  # (N, D)
        for i, h in enumerate(hashes):
            out[i] = cached[h]
        return out, len(missing)

    def add_chunks(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Put chunks into both indexes (before the manifest records them)."""
        if not chunks:
            return
        with self.lock:
            self.dense.upsert([c.chunk_id for c in chunks], vectors, [c.doc_id for c in chunks])
            self.bm25.add_many((c.chunk_id, c.index_text) for c in chunks if c.chunk_id not in self.bm25)

    def drop_chunks(self, chunk_ids: Sequence[str]) -> None:
        """Take chunks out of both indexes (after the manifest forgot them)."""
        if not chunk_ids:
            return
        with self.lock:
            self.dense.delete(chunk_ids)
            self.bm25.remove_many([c for c in chunk_ids if c in self.bm25])

    def save(self) -> None:
        with self.lock:
            self.bm25.save(self.bm25_path)

    # -- consistency --------------------------------------------------------------------------
    def reconcile(self, progress: Progress | None = None, write: bool = True) -> dict[str, int]:
        """Bring Chroma and BM25 in step with the manifest; returns what was fixed.

        With ``write=False`` (a read-only process beside a running watcher) only the in-memory BM25
        index is fixed; Chroma is left alone (hits are always assembled from the manifest).
        """
        with self.sync_lock:
            signature = f"{self.embedder.name}|index-text-v{INDEX_TEXT_VERSION}"
            if write and self.manifest.get_meta("embedding_model") != signature:
                if self.dense.count():
                    self.dense.reset()
                with self.lock:
                    self.bm25 = BM25Index()
                self.manifest.set_meta("embedding_model", signature)
            truth = self.manifest.all_chunk_ids()
            fixed = {"bm25_added": 0, "bm25_removed": 0, "dense_added": 0, "dense_removed": 0}
            in_bm25 = self.bm25.ids()
            extra, missing = in_bm25 - truth, truth - in_bm25
            with self.lock:
                self.bm25.remove_many(list(extra))
                self.bm25.add_many((c.chunk_id, c.index_text) for c in self.manifest.chunks(missing).values())
            fixed.update(bm25_added=len(missing), bm25_removed=len(extra))
            if write:
                in_dense = self.dense.ids()
                extra_d, missing_d = in_dense - truth, truth - in_dense
                self.dense.delete(list(extra_d))
                chunks = list(self.manifest.chunks(missing_d).values())
                for lo in range(0, len(chunks), 2000):
                    part = chunks[lo : lo + 2000]
                    self.dense.upsert([c.chunk_id for c in part], self.embed_chunks(part, progress)[0],
                                      [c.doc_id for c in part])
                fixed.update(dense_added=len(missing_d), dense_removed=len(extra_d))
                if extra or missing:
                    self.save()
            return fixed

    def status(self) -> Status:
        with self.lock:
            return Status(
                documents=self.manifest.document_count("indexed"),
                chunks_manifest=self.manifest.chunk_count(),
                chunks_chroma=self.dense.count(),
                chunks_bm25=len(self.bm25),
                failed=tuple(self.manifest.failures()),
                last_sync=self.manifest.get_meta("last_sync"),
            )


def _take_writer_lock(data_dir: Path):
    """One writing process per data dir: a second one is told which process holds it."""
    import fcntl
    import os

    handle = open(data_dir / "writer.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise IndexError_(
            f"the data dir {data_dir} is being written by {holder}; stop it first, or let that process "
            "(e.g. `footnotes watch` or `footnotes serve`) keep the folder in sync"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle
