"""What a knowledge base holds, read from its files without opening Chroma or loading a model.

``footnotes status`` must answer at once: the manifest (the truth) gives the documents, chunks,
failures and last sync; the BM25 count is read from the saved ``bm25.npz`` (one array of it); the
Chroma count of an embedded store is one read-only SQL query on its ``chroma.sqlite3``. Importing
and opening chromadb costs more than everything else together, so it is done only where that query
cannot answer (a ``chroma run`` server, a store of another layout or a damaged one).
"""

from __future__ import annotations

import ast
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .config import KnowledgeConfig
from .errors import IndexUnusableError
from .types import INDEX_TEXT_VERSION, Failure

MANIFEST_FILE = "manifest.sqlite3"
BM25_FILE = "bm25.npz"
# Chroma's own count of a collection in an embedded store: the rows of its metadata segment.
_CHROMA_COUNT = """
SELECT COUNT(*) FROM embeddings e
JOIN segments s ON e.segment_id = s.id
JOIN collections c ON s.collection = c.id
WHERE c.name = ? AND s.scope = 'METADATA'
"""


@dataclass(frozen=True)
class Status:
    documents: int
    chunks_manifest: int
    chunks_chroma: int
    chunks_bm25: int
    failed: tuple[Failure, ...]
    last_sync: str | None
    warnings: tuple[str, ...] = ()  # sources that cannot be read now (a missing knowledge folder), with the fix

    def to_json(self) -> dict:
        return {
            "warnings": list(self.warnings),
            "documents": self.documents,
            "chunks": {"manifest": self.chunks_manifest, "chroma": self.chunks_chroma, "bm25": self.chunks_bm25},
            "failed": [{"source": f.doc_id, "error": f.error} for f in self.failed],
            "last_sync": self.last_sync,
        }

    @classmethod
    def from_json(cls, data: dict) -> Status:
        """The inverse of ``to_json`` (a status a server sent)."""
        chunks = data["chunks"]
        return cls(int(data["documents"]), int(chunks["manifest"]), int(chunks["chroma"]), int(chunks["bm25"]),
                   tuple(Failure(f["source"], f["error"]) for f in data["failed"]), data["last_sync"],
                   tuple(data.get("warnings", ())))


def no_knowledge_base(data_dir: Path) -> IndexUnusableError:
    return IndexUnusableError(f"there is no knowledge base in {data_dir}; run `footnotes ingest DIR` to build "
                       "one from a folder, or pass the --data-dir it was built in")


def embedding_signature(embedder_name: str) -> str:
    """What the manifest records of the model that built the indexes (and of the index text)."""
    return f"{embedder_name}|index-text-v{INDEX_TEXT_VERSION}"


def embedder_mismatch(stored: str | None, signature: str, data_dir: Path) -> IndexUnusableError | None:
    """The error a reader gets when the indexes were built with another embedding signature."""
    if stored is None or stored == signature:
        return None
    return IndexUnusableError(
        f"the indexes in {data_dir} were built with {stored.split('|')[0]}, the config asks for "
        f"{signature.split('|')[0]}; run `footnotes reindex` (or restart `footnotes watch`/`serve`) to "
        "re-embed, or set embedding.model, embedding.backend and embedding.dtype back"
    )


def read_status(config: KnowledgeConfig, data_dir: Path, embedding_signature: str) -> Status:
    """The status of the knowledge base in ``data_dir``, touching nothing on disk.

    Fails like a reading process would: no knowledge base, an unreadable manifest, indexes built with
    another embedding model (``embedding_signature`` is the config's)."""
    from .manifest import Manifest

    data_dir = Path(data_dir)
    if not (data_dir / MANIFEST_FILE).is_file():
        raise no_knowledge_base(data_dir)
    manifest = Manifest(data_dir / MANIFEST_FILE)
    try:
        manifest.check()
        mismatch = embedder_mismatch(manifest.get_meta("embedding_model"), embedding_signature, data_dir)
        if mismatch is not None:
            raise mismatch
        documents, chunks = manifest.document_count("indexed"), manifest.chunk_count()
        failed, last_sync = tuple(manifest.failures()), manifest.get_meta("last_sync")
    finally:
        manifest.close()
    bm25, warnings = saved_bm25_count(data_dir / BM25_FILE)
    return Status(documents, chunks, chroma_count(config, data_dir), bm25, failed, last_sync, warnings)


def saved_bm25_count(path: Path) -> tuple[int, tuple[str, ...]]:
    """Chunks in the saved BM25 index (0 when there is none yet), and a warning if it is unreadable
    (a reader rebuilds it in memory from the manifest, the next sync saves it again)."""
    if not path.exists():
        return 0, ()
    try:
        with zipfile.ZipFile(path) as saved, saved.open("id_ptr.npy") as member:
            (offsets,) = npy_shape(member)  # (chunks + 1,) offsets of the packed chunk ids
        return max(offsets - 1, 0), ()
    except (OSError, ValueError, KeyError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
        return 0, (f"the BM25 index {path} is unreadable ({type(exc).__name__}); searches rebuild it in memory "
                   "and the next `footnotes ingest` (or a running watcher) saves it again",)


def npy_shape(fh: BinaryIO) -> tuple[int, ...]:
    """The shape in the header of a ``.npy`` stream (format versions 1 to 3), without numpy: importing
    numpy would double the time `footnotes status` takes."""
    if fh.read(6) != b"\x93NUMPY":
        raise ValueError("not a .npy array")
    major = fh.read(2)[0]
    size = int.from_bytes(fh.read(2 if major == 1 else 4), "little")
    header = ast.literal_eval(fh.read(size).decode("latin1"))
    shape = header["shape"] if isinstance(header, dict) else None
    if not (isinstance(shape, tuple) and all(isinstance(n, int) for n in shape)):
        raise ValueError("a .npy header without a shape")
    return shape


def chroma_count(config: KnowledgeConfig, data_dir: Path) -> int:
    """Chroma's count of this data dir's collection: by SQL on an embedded store, else through chromadb."""
    if config.index.chroma == "embedded":
        counted = _embedded_chroma_count(data_dir / "chroma" / "chroma.sqlite3", config.index.collection)
        if counted is not None:
            return counted
    from .dense import DenseIndex

    dense = None
    try:
        dense = DenseIndex(config.index, data_dir)
        return dense.count()
    except IndexUnusableError:
        raise
    except Exception as exc:  # noqa: BLE001 - chromadb raises bare and internal errors for damaged stores
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise IndexUnusableError(f"the Chroma store in {data_dir / 'chroma'} is unusable ({first}); run "
                          "`footnotes reindex` to rebuild it") from None
    finally:
        if dense is not None:
            dense.close()


def _embedded_chroma_count(db_path: Path, collection: str) -> int | None:
    """The count by one read-only query; None when the file is absent, damaged or of another layout
    (then chromadb itself is asked, and says what is wrong)."""
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        if not db.execute("SELECT 1 FROM collections WHERE name = ?", (collection,)).fetchone():
            return None  # not created yet: chromadb creates nothing for a reader either, but knows the answer
        return int(db.execute(_CHROMA_COUNT, (collection,)).fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()
