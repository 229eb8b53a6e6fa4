"""The kNN-LM datastore: (key, next token) pairs for every position of every chunk, searchable.

Keys are the generator's input to its last feed-forward block (see :mod:`assistant.knn.keys`),
values the token that followed, and each entry remembers its chunk and position for provenance.

On disk, under one folder (``<data_dir>/knn/`` for a knowledge base):

- ``seg-NNNNNN/`` immutable segments (:mod:`assistant.knn.segments`), keys fp16 memory-mapped;
- ``meta.json`` the commit point, written atomically after everything it names: the model
  fingerprint, the segments, the live chunks (chunk id -> segment and ordinal) and the index kind;
- ``ivfpq-NNNNNN.faiss`` the trained compressed index, only above ``knn.exact_max_entries``.

Updates are incremental: :meth:`Datastore.apply` writes the added chunks as one new segment and
tombstones removed chunks (their rows stay on disk, out of the live map and out of the faiss
index). When tombstoned rows exceed ``knn.compact_dead_share`` of all rows, or segments pile up,
the live rows are rewritten into one segment (compaction). A crash leaves the last committed
``meta.json`` and its files; anything newer is unreferenced and deleted by the next writer.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from knowledge.atomic import write_atomic
from knowledge.errors import IndexUnusableError

from ..config import KnnConfig
from . import index as faiss_index
from .segments import ChunkEntries, Segment, SegmentChunk, segment_name, split_ids, write_segment

log = logging.getLogger(__name__)

FORMAT = 1
MAX_SEGMENTS = 64  # more than this many segments triggers a compaction
TRAIN_SAMPLE = 200_000  # at most this many keys train the IVF-PQ quantizers


@dataclass(frozen=True)
class SearchResult:
    """The k nearest live entries of each query, nearest first; missing ones (fewer than k entries)
    have id -1, value -1 and distance +inf."""

    distances: np.ndarray  # (B, k) float32 squared L2
    ids: np.ndarray  # (B, k) int64 entry ids
    values: np.ndarray  # (B, k) int64 next-token ids


@dataclass(frozen=True)
class EntryInfo:
    """Where an entry came from: its chunk and the index / character offset of its value token."""

    chunk: SegmentChunk
    token_position: int
    char_position: int


class Datastore:
    """One datastore folder. Thread-safe: searches and updates take one lock (updates are short:
    the keys are computed before). Only one process writes (``writer.lock``); others open it read-only."""

    def __init__(self, root: Path, fingerprint: str, dim: int, config: KnnConfig, write: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.fingerprint = fingerprint
        self.dim = dim
        self._lock = threading.RLock()
        self._writer = _take_writer_lock(self.root) if write else None
        self.writable = self._writer is not None
        self._meta = self._read_meta()
        if self._meta.get("fingerprint") != fingerprint or self._meta.get("dim") != dim:
            self._check_or_reset()
        self.segments = {n: Segment(self.root, n) for n in self._meta["segments"]}
        self._live_rows = {n: self._live_mask(s) for n, s in self.segments.items()}
        self.index = self._open_index()
        if self.writable:
            self._delete_unreferenced()

    # -- what it holds --------------------------------------------------------------------------
    def chunk_ids(self) -> set[str]:
        with self._lock:
            return set(self._meta["live"])

    def __len__(self) -> int:
        """Live entries."""
        with self._lock:
            return int(sum(int(m.sum()) for m in self._live_rows.values()))

    @property
    def index_kind(self) -> str:
        return faiss_index.kind_of(self.index)

    @property
    def complete(self) -> bool:
        """Whether a full build ever finished (later updates keep it so)."""
        return bool(self._meta.get("complete"))

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def memory_bytes(self) -> int:
        """The faiss index plus the per-row arrays kept in memory (keys stay memory-mapped)."""
        with self._lock:
            rows = sum(len(s) for s in self.segments.values())
            return faiss_index.memory_bytes(self.index) + rows * (4 + 8 + 4 + 1)

    # -- updating -------------------------------------------------------------------------------
    def apply(self, added: Sequence[ChunkEntries] = (), removed: Iterable[str] = (), complete: bool | None = None) -> None:
        """Add these chunks' entries (one new segment) and tombstone the removed chunk ids; commit.

        A chunk id that is already live is replaced. ``complete`` records that the datastore now
        holds every chunk of its knowledge base."""
        self._require_writer()
        with self._lock:
            meta = json.loads(json.dumps(self._meta))  # a copy: committed only when written
            gone = {c for c in removed if c in meta["live"]} | {a.chunk_id for a in added if a.chunk_id in meta["live"]}
            dead_ids = self._ids_of(gone)
            for chunk_id in gone:
                del meta["live"][chunk_id]
            new_segment = None
            if added:
                number = meta["next_segment"]
                write_segment(self.root, number, list(added), self.dim)
                meta["next_segment"] = number + 1
                meta["segments"].append(number)
                new_segment = Segment(self.root, number)
                for ordinal, c in enumerate(new_segment.chunks):
                    meta["live"][c.chunk_id] = [number, ordinal]
            if complete is not None:
                meta["complete"] = complete
            self._commit(meta, dead_ids, new_segment)
        if self._needs_compaction():
            self.compact()

    def mark_complete(self, complete: bool = True) -> None:
        self.apply(complete=complete)

    def compact(self) -> None:
        """Rewrite the live rows into one new segment and drop the others."""
        self._require_writer()
        with self._lock:
            meta = json.loads(json.dumps(self._meta))
            entries = [self._entries_of(s, c) for s in self.segments.values()
                       for o, c in enumerate(s.chunks) if meta["live"].get(c.chunk_id) == [s.number, o]]
            number = meta["next_segment"]
            write_segment(self.root, number, entries, self.dim)
            segment = Segment(self.root, number)
            meta.update(next_segment=number + 1, segments=[number],
                        live={c.chunk_id: [number, o] for o, c in enumerate(segment.chunks)})
            old = list(self.segments.values())
            self.segments = {number: segment}
            self._live_rows = {number: np.ones(len(segment), dtype=bool)}
            self.index = self._build_index(meta)
            self._write_meta(meta)
            for s in old:
                shutil.rmtree(s.path, ignore_errors=True)
            self._delete_unreferenced()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self.writable = False

    # -- searching ------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """The k nearest live entries of each query (squared L2).  queries: (B, D) -> (B, k) each."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))  # (B, D)
        with self._lock:
            distances, ids = faiss_index.search(self.index, queries, k, self.config.nprobe)  # (B, k) each
            if self.index_kind == faiss_index.IVFPQ and self.config.rerank:
                distances, ids = self._rerank(queries, ids)
            values = self._values_of(ids)  # (B, k)
        missing = ids < 0
        distances = np.where(missing, np.float32(np.inf), distances).astype(np.float32)
        return SearchResult(distances, ids, np.where(missing, -1, values).astype(np.int64))

    def info(self, entry_id: int) -> EntryInfo:
        with self._lock:
            seg_no, row = (int(x[0]) for x in split_ids(np.array([entry_id])))
            segment = self.segments[seg_no]
            token_pos, char_pos = (int(x) for x in segment.positions[row])
            return EntryInfo(segment.chunks[int(segment.chunk_of_row[row])], token_pos, char_pos)

    def keys_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored fp16 keys of these entry ids, as float32.  ids: (...,) -> (..., D)"""
        flat = ids.reshape(-1)
        out = np.zeros((len(flat), self.dim), dtype=np.float32)
        seg_nos, rows = split_ids(flat)
        with self._lock:
            for n in np.unique(seg_nos[flat >= 0]):
                where = (seg_nos == n) & (flat >= 0)
                rows_here = rows[where]
                order = np.argsort(rows_here)  # sorted reads of the memory map
                block = np.asarray(self.segments[int(n)].keys[rows_here[order]], dtype=np.float32)
                out[np.flatnonzero(where)[order]] = block
        return out.reshape(*ids.shape, self.dim)

    # -- internals ------------------------------------------------------------------------------
    def _values_of(self, ids: np.ndarray) -> np.ndarray:
        out = np.full(ids.shape, -1, dtype=np.int64)
        seg_nos, rows = split_ids(ids)
        for n in np.unique(seg_nos[ids >= 0]):
            where = (seg_nos == n) & (ids >= 0)
            out[where] = self.segments[int(n)].values[rows[where]]
        return out

    def _rerank(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = self.keys_of(ids)  # (B, k, D)
        exact = ((keys - queries[:, None, :]) ** 2).sum(-1).astype(np.float32)  # (B, k)
        exact = np.where(ids < 0, np.float32(np.inf), exact)
        order = np.argsort(exact, axis=1, kind="stable")  # (B, k)
        return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)

    def _ids_of(self, chunk_ids: Iterable[str]) -> np.ndarray:
        parts = []
        for chunk_id in chunk_ids:
            seg_no, ordinal = self._meta["live"][chunk_id]
            segment = self.segments[seg_no]
            c = segment.chunks[ordinal]
            parts.append(segment.ids(np.arange(c.start, c.end)))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _live_mask(self, segment: Segment, live: dict | None = None) -> np.ndarray:
        live = self._meta["live"] if live is None else live
        mask = np.zeros(len(segment), dtype=bool)
        for ordinal, c in enumerate(segment.chunks):
            if live.get(c.chunk_id) == [segment.number, ordinal]:
                mask[c.start : c.end] = True
        return mask

    def _commit(self, meta: dict, dead_ids: np.ndarray, new_segment: Segment | None) -> None:
        """Bring the index and the in-memory state to ``meta``, then write ``meta.json``."""
        old_file = self._meta.get("index", {}).get("file")
        if new_segment is not None:
            self.segments[new_segment.number] = new_segment
        self._live_rows = {n: self._live_mask(s, meta["live"]) for n, s in self.segments.items()}
        live_count = sum(int(m.sum()) for m in self._live_rows.values())
        if self._wanted_kind(live_count, meta) != self.index_kind:
            self.index = self._build_index(meta)
        else:
            faiss_index.remove(self.index, dead_ids)
            if new_segment is not None:
                rows = np.flatnonzero(self._live_rows[new_segment.number])
                faiss_index.add(self.index, np.asarray(new_segment.keys[rows], dtype=np.float32), new_segment.ids(rows))
            self._save_index(meta)
        self._write_meta(meta)
        if old_file and old_file != meta["index"].get("file"):
            (self.root / old_file).unlink(missing_ok=True)

    def _wanted_kind(self, live_count: int, meta: dict) -> str:
        limit = self.config.exact_max_entries
        if self.index_kind == faiss_index.IVFPQ:  # hysteresis: do not flip back and forth at the limit
            return faiss_index.IVFPQ if live_count > limit // 2 else faiss_index.EXACT
        return faiss_index.IVFPQ if live_count > limit else faiss_index.EXACT

    def _open_index(self) -> Any:
        """The saved IVF-PQ index, or an exact one built from the keys; the kind follows the live
        entry count as in :meth:`_wanted_kind` (settings may have changed since the last commit)."""
        spec = self._meta.get("index", {})
        live, limit = len(self), self.config.exact_max_entries
        ivfpq = live > limit or (spec.get("kind") == faiss_index.IVFPQ and live > limit // 2)
        if ivfpq and (self.root / spec.get("file", "-")).is_file():
            try:
                return faiss_index.load(self.root / spec["file"])
            except RuntimeError:
                log.warning("the IVF-PQ index %s is unreadable; retraining it", spec["file"])
        index = self._build_index(self._meta, save=self.writable)
        if self.writable and self._meta.get("index") != spec:
            self._write_meta(self._meta)
        return index

    def _build_index(self, meta: dict, save: bool = True) -> Any:
        live_count = sum(int(m.sum()) for m in self._live_rows.values())
        spec = meta.get("index", {})
        limit = self.config.exact_max_entries
        ivfpq = live_count > limit or (spec.get("kind") == faiss_index.IVFPQ and live_count > limit // 2)
        self.index = faiss_index.new_exact(self.dim)  # kind_of() below must see the current kind
        kind = faiss_index.IVFPQ if ivfpq else faiss_index.EXACT
        if kind == faiss_index.EXACT:
            self._add_live(self.index)
            meta["index"] = {"kind": faiss_index.EXACT}
            return self.index
        index = faiss_index.train_ivfpq(self._sample_keys(TRAIN_SAMPLE), live_count, self.config.pq_subquantizers)
        self._add_live(index)
        meta["index"] = {"kind": faiss_index.IVFPQ, "trained_on": live_count}
        self.index = index
        if save:
            self._save_index(meta)
        return index

    def _save_index(self, meta: dict) -> None:
        if self.index_kind != faiss_index.IVFPQ:
            meta["index"] = {"kind": faiss_index.EXACT}
            return
        name = f"ivfpq-{meta['next_segment']:06d}-{os.getpid()}-{threading.get_ident() % 10_000}.faiss"
        faiss_index.save(self.index, self.root / name)
        meta["index"] = {**meta.get("index", {}), "kind": faiss_index.IVFPQ, "file": name}

    def _add_live(self, index: Any, batch: int = 50_000) -> None:
        for n, segment in self.segments.items():
            rows = np.flatnonzero(self._live_rows[n])
            for lo in range(0, len(rows), batch):
                part = rows[lo : lo + batch]
                faiss_index.add(index, np.asarray(segment.keys[part], dtype=np.float32), segment.ids(part))

    def _sample_keys(self, size: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        parts = []
        total = sum(int(m.sum()) for m in self._live_rows.values())
        for n, segment in self.segments.items():
            rows = np.flatnonzero(self._live_rows[n])
            take = rows if total <= size else np.sort(rng.choice(rows, int(len(rows) * size / total), replace=False))
            parts.append(np.asarray(segment.keys[take], dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _entries_of(self, segment: Segment, c: SegmentChunk) -> ChunkEntries:
        rows = slice(c.start, c.end)
        return ChunkEntries(c.chunk_id, c.source, c.text, np.asarray(segment.keys[rows]), segment.values[rows],
                            segment.positions[rows, 0], segment.positions[rows, 1])

    def _needs_compaction(self) -> bool:
        with self._lock:
            total = sum(len(s) for s in self.segments.values())
            dead = total - len(self)
            return len(self.segments) > MAX_SEGMENTS or (dead > 0 and dead > self.config.compact_dead_share * total)

    # -- meta.json ------------------------------------------------------------------------------
    def _read_meta(self) -> dict:
        path = self.root / "meta.json"
        if not path.exists():
            return _empty_meta(self.fingerprint, self.dim)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexUnusableError(f"the kNN-LM datastore {path} is unreadable ({exc}); delete {self.root} "
                              "and it is rebuilt") from None
        if meta.get("format") != FORMAT:
            raise IndexUnusableError(f"the kNN-LM datastore {self.root} has format {meta.get('format')}, this Footnotes "
                              f"reads {FORMAT}; delete {self.root} and it is rebuilt")
        return meta

    def _check_or_reset(self) -> None:
        if not self._meta["segments"]:
            self._meta = _empty_meta(self.fingerprint, self.dim)
            return
        if not self.writable:
            raise IndexUnusableError(f"the kNN-LM datastore {self.root} was built with another generator; it is "
                              "rebuilt by the process that writes this data dir")
        log.warning("the kNN-LM datastore %s was built with another generator: rebuilding it", self.root)
        self._meta = _empty_meta(self.fingerprint, self.dim)
        self._write_meta(self._meta)

    def _write_meta(self, meta: dict) -> None:
        write_atomic(self.root / "meta.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        self._meta = meta

    def _delete_unreferenced(self) -> None:
        keep = {segment_name(n) for n in self._meta["segments"]}
        keep |= {self._meta.get("index", {}).get("file", "")} | {"meta.json", "writer.lock"}
        for p in self.root.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        for n in [n for n in self.segments if segment_name(n) not in keep]:
            del self.segments[n]
            self._live_rows.pop(n, None)

    def _require_writer(self) -> None:
        if not self.writable:
            raise IndexUnusableError(f"the kNN-LM datastore {self.root} is open read-only: another process writes it")


def _empty_meta(fingerprint: str, dim: int) -> dict:
    return {"format": FORMAT, "fingerprint": fingerprint, "dim": dim, "next_segment": 1, "segments": [],
            "live": {}, "index": {"kind": faiss_index.EXACT}, "complete": False}


def _take_writer_lock(root: Path) -> Any:
    """The flock of ``root/writer.lock``, or None when another process holds it."""
    handle = open(root / "writer.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
