"""The dense index: Chroma, embedded (PersistentClient) or a `chroma run` server (HttpClient).

We always hand Chroma our own vectors and our own embedding function, so it never tries to
download its default ONNX model.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .atomic import write_atomic
from .config import IndexConfig
from .embedding import Embedder
from .errors import IndexUnusableError

_BATCH = 1000
_ID_FILE = "chroma-id"
T = TypeVar("T")


class _OwnEmbeddingFunction:
    """Chroma's embedding-function protocol over our Embedder (used only if Chroma asks)."""

    def __init__(self, embedder: Embedder | None) -> None:
        self._embedder = embedder

    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:  # noqa: A002 - Chroma's name
        if self._embedder is None:
            raise IndexUnusableError("the dense index was asked to embed text without an embedder")
        return list(self._embedder.embed(list(input)))

    def embed_query(self, input: Sequence[str]) -> list[np.ndarray]:  # noqa: A002
        return self(input)

    @staticmethod
    def name() -> str:
        return "footnotes"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "_OwnEmbeddingFunction":
        return _OwnEmbeddingFunction(None)

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]


def collection_name(config: IndexConfig, data_dir: Path) -> str:
    """The Chroma collection of one data dir.

    Embedded, the store lives in the data dir and the name is ``index.collection``. A server may be
    shared by several knowledge bases, and each data dir's manifest must see only its own vectors:
    there the name gets the data dir's id, made once and kept in ``<data dir>/chroma-id``.
    """
    if config.chroma != "http":
        return config.collection
    return f"{config.collection}-{_data_dir_id(Path(data_dir))}"


def _data_dir_id(data_dir: Path) -> str:
    path = data_dir / _ID_FILE
    if not path.exists():
        fresh = data_dir / f"{_ID_FILE}.{uuid.uuid4().hex}.tmp"
        write_atomic(fresh, f"{uuid.uuid4().hex[:16]}\n".encode())
        try:
            os.link(fresh, path)  # atomic and exclusive: a concurrent opener's id stays if it came first
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
    return path.read_text().strip()


def _server_down(config: IndexConfig, exc: Exception) -> IndexUnusableError:
    where = f"{config.chroma_host}:{config.chroma_port}"
    return IndexUnusableError(
        f"the Chroma server at http://{where} does not answer ({exc}); start it again with "
        f"`chroma run --host {config.chroma_host} --port {config.chroma_port} --path DIR` (the DIR it served "
        'before; Footnotes reconnects by itself), or set [index] chroma = "embedded" in the config file'
    )


def _client(config: IndexConfig, data_dir: Path):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    try:
        if config.chroma == "http":
            return chromadb.HttpClient(host=config.chroma_host, port=config.chroma_port, settings=settings)
        return chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=settings)
    except Exception as exc:  # chromadb raises bare Exceptions for connection and store problems
        if config.chroma == "http":
            raise _server_down(config, exc) from None
        raise IndexUnusableError(
            f"cannot open the Chroma store at {data_dir / 'chroma'} ({exc}); run `footnotes reindex` to rebuild it"
        ) from None


def _reports_server_down(method: Callable[..., T]) -> Callable[..., T]:
    """A Chroma server that stops answering, or lost this data dir's collection, is one clear IndexUnusableError.

    The HTTP client reconnects by itself: the next call after the server is back works."""

    @functools.wraps(method)
    def wrapper(self: DenseIndex, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except self._unreachable as exc:
            raise _server_down(self.config, exc) from None
        except self._gone:
            raise IndexUnusableError(
                f"the collection {self.name} is gone from the Chroma server at http://{self.config.chroma_host}:"
                f"{self.config.chroma_port} (the server lost its data, or the collection was deleted); restart "
                "Footnotes: opening refills it from the manifest's embedding cache (or run `footnotes reindex`)"
            ) from None

    return wrapper


class DenseIndex:
    """Chunk vectors in a Chroma collection, keyed by chunk id, with cosine distance."""

    def __init__(self, config: IndexConfig, data_dir: Path, embedder: Embedder | None = None) -> None:
        self.config = config
        self._unreachable: tuple[type[Exception], ...] = ()
        self._gone: tuple[type[Exception], ...] = ()
        if config.chroma == "http":
            import httpx  # Chroma's HTTP client: connection refused, reset, timed out
            from chromadb.errors import NotFoundError

            self._unreachable, self._gone = (httpx.TransportError,), (NotFoundError,)
        self.name = collection_name(config, Path(data_dir))
        self._client = _client(config, data_dir)
        self._ef = _OwnEmbeddingFunction(embedder)
        self._collection = self._open()

    @_reports_server_down
    def _open(self):
        return self._client.get_or_create_collection(
            name=self.name, embedding_function=self._ef, metadata={"hnsw:space": "cosine"}
        )

    @_reports_server_down
    def reset(self) -> None:
        """Drop every vector (used when the embedding model changes, and by reindex)."""
        from chromadb.errors import NotFoundError

        try:
            self._client.delete_collection(self.name)
        except NotFoundError:
            pass
        self._collection = self._open()

    def close(self) -> None:
        """Release the client (an embedded store's files are closed once no client in this process uses them)."""
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    @_reports_server_down
    def count(self) -> int:
        return self._collection.count()

    @_reports_server_down
    def ids(self) -> set[str]:
        out: set[str] = set()
        total = self.count()
        for offset in range(0, total, 10_000):
            out.update(self._collection.get(limit=10_000, offset=offset, include=[])["ids"])
        return out

    @_reports_server_down
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, doc_ids: Sequence[str]) -> None:
        """Add or replace vectors (N, D) for chunk ``ids`` of documents ``doc_ids``."""
        for lo in range(0, len(ids), _BATCH):
            hi = lo + _BATCH
            self._collection.upsert(
                ids=list(ids[lo:hi]),
                embeddings=vectors[lo:hi],  # (b, D)
                metadatas=[{"doc_id": d} for d in doc_ids[lo:hi]],
            )

    @_reports_server_down
    def delete(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        for lo in range(0, len(ids), _BATCH):
            self._collection.delete(ids=ids[lo : lo + _BATCH])

    @_reports_server_down
    def search(self, vector: np.ndarray, k: int, allowed: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Top-k (chunk id, cosine similarity) for a query vector (D,); ``allowed`` restricts the ids."""
        if k <= 0 or (allowed is not None and not allowed):
            return []  # (Chroma returns fewer than n_results when it holds fewer: no count() round trip)
        try:
            return self._query(vector, k, allowed)
        except Exception as exc:  # chromadb raises InternalError("Error finding id") for an id it lacks
            if allowed is None or not _finding_id(exc):
                raise
        # Another process's manifest is ahead of Chroma (a crash before the writer reconciled): search
        # among the allowed ids Chroma holds; the writer fills the gap when it opens.
        held = self._collection.get(ids=list(allowed), include=[])["ids"]
        return self._query(vector, k, held) if held else []

    @_reports_server_down
    def similarities(self, vector: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """Exact cosine similarity of a query vector (D,) to the stored vectors of ``ids`` (those held)."""
        if not ids:
            return {}
        held, vectors = self._vectors_of(list(ids))
        if not held:
            return {}
        stored = np.asarray(vectors, dtype=np.float32)  # (n, D)
        query = np.asarray(vector, dtype=np.float32)  # (D,)
        norms = np.linalg.norm(stored, axis=1) * max(float(np.linalg.norm(query)), 1e-12)  # (n,)
        return dict(zip(held, (stored @ query / np.maximum(norms, 1e-12)).tolist()))

    def _vectors_of(self, ids: list[str]) -> tuple[list[str], list[Any]]:
        """The ids of ``ids`` that Chroma holds, and their stored vectors. While another process adds
        some of them (``footnotes watch`` writing as ``footnotes search`` reads) the batch read can fail
        with chromadb's InternalError "Error finding id": then they are read one by one, and an id that
        still fails counts as not held yet, as an id Chroma lacks does."""
        batch = self._read_vectors(ids)
        if batch is not None:
            return batch
        held: list[str] = []
        vectors: list[Any] = []
        for one in filter(None, (self._read_vectors([chunk_id]) for chunk_id in ids)):
            held += one[0]
            vectors += one[1]
        return held, vectors

    def _read_vectors(self, ids: list[str]) -> tuple[list[str], list[Any]] | None:
        """(held ids, their vectors), or None where Chroma fails to find one of ``ids`` mid-write."""
        try:
            got = self._collection.get(ids=ids, include=["embeddings"])
        except Exception as exc:  # chromadb.errors.InternalError, not importable before chromadb is
            if not _finding_id(exc):
                raise
            return None
        return list(got["ids"]), (list(got["embeddings"]) if got["ids"] else [])

    def _query(self, vector: np.ndarray, k: int, allowed: Sequence[str] | None) -> list[tuple[str, float]]:
        kwargs: dict[str, Any] = {}
        if allowed is not None:
            kwargs["ids"] = list(allowed)
        res = self._collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=k if allowed is None else min(k, len(allowed)),
            include=["distances"],
            **kwargs,
        )
        return [(cid, 1.0 - float(dist)) for cid, dist in zip(res["ids"][0], res["distances"][0])]


def _finding_id(exc: Exception) -> bool:
    """chromadb's InternalError "Error finding id": an id it does not hold (or not yet, mid-write)."""
    return "finding id" in str(exc)
