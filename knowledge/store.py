"""The knowledge store: the manifest, the dense index and the BM25 index of one data dir, kept in step.

The manifest is the truth; ``reconcile`` brings Chroma and BM25 back to it after a crash, an
interrupted ingest or a change of embedding model. The BM25 index lives in memory and is saved
atomically to ``bm25.npz`` after every sync.

Opening checks every derived index. What is cheap to rebuild is rebuilt by a writing process, with a
warning: an unreadable or outdated ``bm25.npz`` (from the manifest's chunk texts), an embedded Chroma
store that does not open or holds vectors that are not this embedder's (from the manifest's
embedding cache, embedding only what the cache lacks). A reader, and a broken manifest, get an
IndexUnusableError that says what to run. A write that fails (disk full, permission denied) is an IndexUnusableError
naming the index; the indexes as they were stay usable and the next sync reconciles first.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .bm25 import BM25Index
from .config import KnowledgeConfig
from .dense import DenseIndex
from .embedding import Embedder, text_hash
from .errors import IndexUnusableError
from .manifest import Manifest
from .status import MANIFEST_FILE, Status, embedder_mismatch, embedding_signature, no_knowledge_base
from .progress import NoProgress, Progress
from .types import Chunk, Reconciled

log = logging.getLogger(__name__)
_PROBE_MIN_SIMILARITY = 0.99  # a chunk's stored vector against its cached one: equal up to float error


class KnowledgeStore:
    """Manifest + Chroma + BM25 under ``data_dir``.

    ``lock`` guards each short index mutation and every BM25 search; ``sync_lock`` lets one sync
    run at a time without blocking searches while it embeds.
    """

    def __init__(self, config: KnowledgeConfig, data_dir: Path, embedder: Embedder, write: bool = True) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        if not write and not (self.data_dir / MANIFEST_FILE).is_file():  # a reader creates nothing
            raise no_knowledge_base(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._writer_lock = take_writer_lock(self.data_dir) if write else None
        self.embedder = embedder
        self.lock = threading.RLock()
        self.sync_lock = threading.RLock()
        self.write = write
        self.dirty = False  # a write failed: the next sync reconciles before it starts
        self.manifest = Manifest(self.data_dir / MANIFEST_FILE)
        self.dense = self._open_dense()
        self.bm25_path = self.data_dir / "bm25.npz"
        self.bm25 = self._load_bm25()

    def _load_bm25(self) -> BM25Index:
        if not self.bm25_path.exists():
            return BM25Index()
        try:
            return BM25Index.load(self.bm25_path)
        except IndexUnusableError as exc:  # derived data: rebuilt from the manifest by reconcile
            log.warning("%s; rebuilding it from the manifest", exc)
            return BM25Index()

    def _open_dense(self) -> DenseIndex:
        """The Chroma collection, checked; an embedded store that fails is rebuilt by a writer."""
        dense = None
        try:
            dense = DenseIndex(self.config.index, self.data_dir, self.embedder)
            dense.count()  # a damaged store opens, then fails on first use
            return dense
        except Exception as exc:  # noqa: BLE001 - chromadb raises bare and internal errors for damaged stores
            if dense is not None:
                dense.close()
            if not self.write or self.config.index.chroma != "embedded":
                if isinstance(exc, IndexUnusableError):
                    raise
                raise IndexUnusableError(f"the Chroma store in {self.data_dir / 'chroma'} is unusable "
                                  f"({_first_line(exc)}); run `footnotes reindex` to rebuild it") from None
            log.warning("the Chroma store in %s is unusable (%s); rebuilding it from the manifest and the "
                        "embedding cache", self.data_dir / "chroma", _first_line(exc))
        _remove_embedded_chroma(self.data_dir / "chroma")
        return DenseIndex(self.config.index, self.data_dir, self.embedder)

    def close(self) -> None:
        self.manifest.close()
        self.dense.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # releases the flock
            self._writer_lock = None

    # -- writing ------------------------------------------------------------------------------
    def embed_chunks(self, chunks: Sequence[Chunk], progress: Progress | None = None) -> tuple[np.ndarray, int]:
        """Vectors (N, D) for chunks, from the embedding cache where the same text was embedded before.

        Returns the vectors and how many texts the model had to embed."""
        progress = progress or NoProgress()
        model = self.embedder.name
        texts = [c.index_text for c in chunks]
        hashes = [text_hash(t) for t in texts]
        cached = self.manifest.cached_embeddings(model, hashes, self.embedder.dim)
        missing = sorted({h: i for i, h in enumerate(hashes) if h not in cached}.items())  # (hash, a chunk with it)
        progress.start(len(missing), "embedding")
        if missing:
            contexts: dict[str, list[int]] = {}
            ids = [index_token_ids(self.embedder, chunks[i], contexts) for _, i in missing]
            vectors = self.embedder.embed([texts[i] for _, i in missing], self.config.embedding.batch_size,
                                          progress.advance, token_ids=ids)
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
        with self.lock, self._writing("the dense index (Chroma)"):
            self.dense.upsert([c.chunk_id for c in chunks], vectors, [c.doc_id for c in chunks])
            self.bm25.add_many((c.chunk_id, c.index_text) for c in chunks if c.chunk_id not in self.bm25)

    def drop_chunks(self, chunk_ids: Sequence[str]) -> None:
        """Take chunks out of both indexes (after the manifest forgot them)."""
        if not chunk_ids:
            return
        with self.lock, self._writing("the dense index (Chroma)"):
            self.dense.delete(chunk_ids)
            self.bm25.remove_many([c for c in chunk_ids if c in self.bm25])

    def save(self) -> None:
        with self.lock, self._writing(f"the BM25 index {self.bm25_path}"):
            self.bm25.save(self.bm25_path)

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """An OSError (disk full, permission denied) becomes an IndexUnusableError naming ``what``; any failure
        marks the store dirty so the next sync reconciles."""
        try:
            yield
        except OSError as exc:
            self.dirty = True
            raise IndexUnusableError(
                f"could not write {what} ({exc.strerror or exc}); free disk space or make {self.data_dir} "
                "writable, then sync again: the indexes as they were stay usable"
            ) from None
        except BaseException:
            self.dirty = True
            raise

    # -- consistency --------------------------------------------------------------------------
    def reconcile(self, progress: Progress | None = None, write: bool = True) -> Reconciled:
        """Bring Chroma and BM25 in step with the manifest; returns what was fixed.

        With ``write=False`` (a read-only process beside a running watcher) only the in-memory BM25
        index is fixed; Chroma is left alone (hits are always assembled from the manifest).
        """
        with self.sync_lock:
            self._check_embedder(write)
            truth = self.manifest.all_chunk_ids()
            in_bm25 = self.bm25.ids()
            extra, missing = in_bm25 - truth, truth - in_bm25
            with self.lock:
                self.bm25.remove_many(list(extra))
                self.bm25.add_many((c.chunk_id, c.index_text) for c in self.manifest.chunks(missing).values())
            fixed = Reconciled(bm25_added=len(missing), bm25_removed=len(extra))
            if write:
                fixed = dataclasses.replace(fixed, **self._fix_dense(truth, progress))
                if not self._dense_vectors_are_ours():
                    log.warning("the Chroma store in %s holds vectors that are not %s's; re-adding them from "
                                "the embedding cache", self.data_dir, self.embedder.name)
                    self.dense.reset()
                    fixed = dataclasses.replace(fixed, **self._fix_dense(truth, progress))
                if extra or missing:
                    self.save()
                self.manifest.prune_embedding_cache_fully()  # what a crash or an older version left behind
                self.dirty = False
            elif not self._dense_vectors_are_ours():
                raise IndexUnusableError(f"the Chroma store in {self.data_dir} holds vectors that are not "
                                  f"{self.embedder.name}'s; run `footnotes reindex` to rebuild it")
            return fixed

    def _fix_dense(self, truth: set[str], progress: Progress | None) -> dict[str, int]:
        """Delete Chroma's orphans and add the manifest's chunks it lacks (vectors from the cache);
        returns the ``Reconciled`` fields it sets."""
        in_dense = self.dense.ids()
        extra, missing = in_dense - truth, truth - in_dense
        self.dense.delete(list(extra))
        chunks = list(self.manifest.chunks(missing).values())
        for lo in range(0, len(chunks), 2000):
            part = chunks[lo : lo + 2000]
            self.dense.upsert([c.chunk_id for c in part], self.embed_chunks(part, progress)[0], [c.doc_id for c in part])
        return {"dense_added": len(missing), "dense_removed": len(extra)}

    def _check_embedder(self, write: bool) -> None:
        """Indexes built with another embedding model (or dtype, or index text) are dropped by a writer
        and re-embedded; a reader is told, instead of searching vectors of another model."""
        signature = embedding_signature(self.embedder.name)
        stored = self.manifest.get_meta("embedding_model")
        if stored == signature:
            return
        if not write:
            mismatch = embedder_mismatch(stored, signature, self.data_dir)
            if mismatch is not None:
                raise mismatch
            return
        if self.dense.count():
            self.dense.reset()
        with self.lock:
            self.bm25 = BM25Index()
        self.manifest.set_meta("embedding_model", signature)

    def _dense_vectors_are_ours(self) -> bool:
        """Probe one chunk: its vector in Chroma must be the one the embedding cache holds for its text.

        Catches a Chroma store copied from elsewhere or damaged vectors, which would otherwise give
        plausible but wrong hits. True when there is nothing to compare (an empty manifest, a text not
        in the cache, a chunk Chroma lacks)."""
        chunk = self.manifest.any_chunk()
        if chunk is None:
            return True
        cached = self.manifest.cached_embeddings(self.embedder.name, [text_hash(chunk.index_text)])  # any dim: the
        # model is not loaded for this (a reader asking for the status never needs it)
        if not cached:
            return True
        try:
            found = self.dense.search(next(iter(cached.values())), 1, [chunk.chunk_id])
        except Exception:  # noqa: BLE001 - chromadb raises when the id is missing (a gap): nothing to compare
            return True
        return not found or found[0][0] != chunk.chunk_id or found[0][1] >= _PROBE_MIN_SIMILARITY

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


def index_token_ids(embedder: Embedder, chunk: Chunk, contexts: dict[str, list[int]] | None = None) -> list[int] | None:
    """``embedder.token_ids(chunk.index_text)`` from the token ids the chunker kept (None without them): the
    context's ids (looked up in, and added to, ``contexts``), then the text's; the newline between them is no token."""
    if chunk.token_ids is None or not embedder.reuses_token_ids:
        return None
    context = chunk.index_context
    if not context:
        return list(chunk.token_ids)
    if contexts is None:
        contexts = {}
    if context not in contexts:
        contexts[context] = embedder.token_ids(context)
    return [*contexts[context], *chunk.token_ids]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _remove_embedded_chroma(path: Path) -> None:
    """Delete an embedded Chroma store (its client must be closed).

    chromadb keeps one client system per path in the process, even one that failed to start: that
    one is forgotten too, or the new store would be opened through it."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(path), None)  # noqa: SLF001 - no public way
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def take_writer_lock(data_dir: Path):
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
        raise IndexUnusableError(
            f"the data dir {data_dir} is being written by {holder}; stop it first, or let that process "
            "(e.g. `footnotes watch` or `footnotes serve`) keep the folder in sync"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle
