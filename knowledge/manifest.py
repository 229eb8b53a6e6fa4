"""The manifest: a SQLite record of source documents -> version -> chunks.

It is the source of truth for what is indexed: Chroma and BM25 are reconciled against it, and hits
are assembled from it (so an orphan vector can never surface). Every change of one document is one
transaction; an embedding cache (by text hash) lets renamed or re-chunked text skip re-embedding.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import IndexUnusableError
from .types import Chunk, Failure

if TYPE_CHECKING:  # numpy and the embedding module load on first use: `footnotes status` needs neither
    import numpy as np

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    stamp TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'failed')),
    error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    heading_path TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (doc_id, ord);
CREATE TABLE IF NOT EXISTS embedding_cache (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
);
"""


@dataclass(frozen=True)
class DocumentRecord:
    doc_id: str
    kind: str  # the source kind that holds it (the `source` column)
    stamp: str
    version: str
    status: str
    error: str
    updated_at: float


class Manifest:
    """Thread-safe access to the manifest database at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._dropped: dict[str, str] = {}  # index-text hash -> chunk text, of chunks that left since the last prune
        with self._use():
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._check_version()  # before the schema script: a newer manifest is not touched
            self._db.executescript(_SCHEMA)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))

    def _check_version(self) -> None:
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        found = self.get_meta("schema_version") if has_meta else None
        if found is not None and found != str(SCHEMA_VERSION):
            raise IndexUnusableError(
                f"the manifest {self.path} has schema version {found}, this Footnotes reads version "
                f"{SCHEMA_VERSION}; run `footnotes reindex` to rebuild the indexes from your documents"
            )

    @contextmanager
    def _use(self) -> Iterator[None]:
        """Hold the lock; an SQLite error becomes an IndexUnusableError that says which file and how to fix it."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise IndexUnusableError(_explain(self.path, exc)) from None

    def close(self) -> None:
        with self._use():
            self._db.close()

    def check(self) -> None:
        """IndexUnusableError (what to run) unless every page of the database is whole (SQLite's quick_check:
        a count alone would not read a damaged page)."""
        with self._use():
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            raise IndexUnusableError(_explain(self.path, sqlite3.DatabaseError("damaged: " + " ".join(str(problems[0]).split()).replace("*** in database main *** ", ""))))

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._use():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._use():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- documents ----------------------------------------------------------------------------
    def document(self, doc_id: str) -> DocumentRecord | None:
        with self._use():
            row = self._db.execute(
                "SELECT doc_id, source, stamp, version, status, error, updated_at FROM documents WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
        return DocumentRecord(*row) if row else None

    def documents(self, kind: str | None = None) -> list[DocumentRecord]:
        sql = "SELECT doc_id, source, stamp, version, status, error, updated_at FROM documents"
        args: tuple = ()
        if kind is not None:
            sql += " WHERE source = ?"
            args = (kind,)
        with self._use():
            return [DocumentRecord(*r) for r in self._db.execute(sql + " ORDER BY doc_id", args)]

    def chunk_ids_of(self, doc_id: str) -> set[str]:
        with self._use():
            return {r[0] for r in self._db.execute("SELECT chunk_id FROM chunks WHERE doc_id = ?", (doc_id,))}

    def replace_document(self, record: DocumentRecord, chunks: Sequence[Chunk]) -> None:
        """Set a document's record and chunks in one transaction."""
        with self._use(), self._transaction():
            self._note_dropped(record.doc_id)
            self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (record.doc_id,))
            self._db.execute(
                "INSERT OR REPLACE INTO documents (doc_id, source, stamp, version, status, error, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.doc_id, record.kind, record.stamp, record.version, record.status, record.error,
                 record.updated_at),
            )
            self._db.executemany(
                'INSERT INTO chunks (chunk_id, doc_id, ord, start, "end", heading_path, text) VALUES (?, ?, ?, ?, ?, ?, ?)',
                [(c.chunk_id, c.doc_id, i, c.start, c.end, json.dumps(list(c.heading_path)), c.text)
                 for i, c in enumerate(chunks)],
            )

    def touch_document(self, doc_id: str, stamp: str) -> None:
        """Record a new stamp for a document whose content did not change."""
        with self._use():
            self._db.execute("UPDATE documents SET stamp = ? WHERE doc_id = ?", (stamp, doc_id))

    def remove_document(self, doc_id: str) -> None:
        with self._use(), self._transaction():
            self._note_dropped(doc_id)
            self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def failures(self) -> list[Failure]:
        with self._use():
            rows = self._db.execute("SELECT doc_id, error FROM documents WHERE status = 'failed' ORDER BY doc_id")
            return [Failure(doc_id, error) for doc_id, error in rows]

    # -- chunks -------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        with self._use():
            return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def document_count(self, status: str = "indexed") -> int:
        with self._use():
            return self._db.execute("SELECT COUNT(*) FROM documents WHERE status = ?", (status,)).fetchone()[0]

    def any_chunk(self) -> Chunk | None:
        """One chunk (the first by id), or None when there is none."""
        with self._use():
            row = self._db.execute("SELECT MIN(chunk_id) FROM chunks").fetchone()
        return self.chunks([row[0]]).get(row[0]) if row and row[0] else None

    def all_chunk_ids(self) -> set[str]:
        with self._use():
            return {r[0] for r in self._db.execute("SELECT chunk_id FROM chunks")}

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """The chunks with these ids that the manifest holds (unknown ids are left out)."""
        ids = list(dict.fromkeys(chunk_ids))
        out: dict[str, Chunk] = {}
        with self._use():
            for lo in range(0, len(ids), 500):
                part = ids[lo : lo + 500]
                rows = self._db.execute(
                    'SELECT chunk_id, doc_id, start, "end", text, heading_path FROM chunks WHERE chunk_id IN '
                    f"({','.join('?' * len(part))})",
                    part,
                )
                for cid, doc_id, start, end, text, heads in rows:
                    out[cid] = Chunk(cid, doc_id, start, end, text, tuple(json.loads(heads)))
        return out

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        with self._use():
            rows = self._db.execute(
                'SELECT chunk_id, doc_id, start, "end", text, heading_path FROM chunks WHERE doc_id = ? ORDER BY ord',
                (doc_id,),
            ).fetchall()
        return [Chunk(cid, d, s, e, t, tuple(json.loads(h))) for cid, d, s, e, t, h in rows]

    def chunk_ids_where(self, prefix: str = "", suffixes: Sequence[str] = ()) -> set[str]:
        """Chunk ids of documents whose id starts with ``prefix`` and ends with one of ``suffixes``."""
        sql = "SELECT chunk_id, doc_id FROM chunks WHERE substr(doc_id, 1, ?) = ?"
        with self._use():
            rows = self._db.execute(sql, (len(prefix), prefix)).fetchall()
        wanted = tuple(s.lower() for s in suffixes)
        return {cid for cid, doc in rows if not wanted or doc.lower().endswith(wanted)}

    # -- embedding cache ----------------------------------------------------------------------
    def cached_embeddings(self, model: str, hashes: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The cached vectors of these text hashes (those of length ``dim`` only, when it is given)."""
        import numpy as np

        out: dict[str, np.ndarray] = {}
        with self._use():
            for lo in range(0, len(hashes), 500):
                part = list(hashes[lo : lo + 500])
                rows = self._db.execute(
                    f"SELECT text_hash, vector FROM embedding_cache WHERE model = ? AND text_hash IN ({','.join('?' * len(part))})",
                    [model, *part],
                )
                for h, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if dim is None or vec.shape == (dim,):
                        out[h] = vec
        return out

    def cache_embeddings(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        import numpy as np

        with self._use(), self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO embedding_cache (model, text_hash, vector) VALUES (?, ?, ?)",
                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items],
            )

    def prune_embedding_cache(self) -> int:
        """Forget the cached vectors of texts that left the manifest since the last prune and that no chunk
        uses any more (a text that moved to another document keeps its vector). Returns how many went.

        Called at the end of every sync: every edit leaves its old chunk texts behind, and without this
        the cache would grow with each one."""
        with self._use():
            dropped, self._dropped = self._dropped, {}
            if not dropped:
                return 0
            texts = sorted(set(dropped.values()))
            live: set[str] = set()
            for lo in range(0, len(texts), 500):
                part = texts[lo : lo + 500]
                rows = self._db.execute(
                    f"SELECT doc_id, heading_path, text FROM chunks WHERE text IN ({','.join('?' * len(part))})", part
                )
                live.update(_index_text_hash(*row) for row in rows)
            return self._forget_cached(set(dropped) - live)

    def prune_embedding_cache_fully(self) -> int:
        """Forget every cached vector whose text no chunk uses (a full scan: after a crash, or for a
        manifest from before pruning). Cheap when there is nothing to prune: it compares counts first."""
        with self._use():
            cached = self._db.execute("SELECT COUNT(DISTINCT text_hash) FROM embedding_cache").fetchone()[0]
            if cached <= self.chunk_count():
                return 0  # nothing or little to gain: the per-sync prune keeps it exact from here
            live = {_index_text_hash(*row) for row in self._db.execute("SELECT doc_id, heading_path, text FROM chunks")}
            stale = {r[0] for r in self._db.execute("SELECT DISTINCT text_hash FROM embedding_cache")} - live
            return self._forget_cached(stale)

    def _forget_cached(self, hashes: set[str]) -> int:
        """Delete the cached vectors (of every model) of these text hashes; the caller holds the lock."""
        if not hashes:
            return 0
        with self._transaction():
            self._db.executemany("DELETE FROM embedding_cache WHERE text_hash = ?", [(h,) for h in sorted(hashes)])
        return len(hashes)

    def _note_dropped(self, doc_id: str) -> None:
        """Remember the texts of a document's chunks before they leave, for ``prune_embedding_cache``."""
        rows = self._db.execute("SELECT doc_id, heading_path, text FROM chunks WHERE doc_id = ?", (doc_id,))
        for row in rows:
            self._dropped[_index_text_hash(*row)] = row[2]

    # -- helpers ------------------------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _index_text_hash(doc_id: str, heading_path: str, text: str) -> str:
    """The embedding-cache key of a chunk row: the hash of what both indexes see (``Chunk.index_text``)."""
    from .embedding import text_hash

    return text_hash(Chunk("", doc_id, 0, 0, text, tuple(json.loads(heading_path))).index_text)


def _explain(path: Path, exc: sqlite3.Error) -> str:
    """What went wrong with the manifest and what to do about it."""
    text = str(exc)
    if "full" in text or "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return (f"could not write the manifest {path} ({text}); free disk space or make {path.parent} "
                "writable, then sync again: the indexes as they were stay usable")
    return f"the manifest {path} is unreadable ({text}); run `footnotes reindex` to rebuild it from your documents"


def now() -> float:
    return time.time()
