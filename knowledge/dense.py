"""The dense index: Chroma, embedded (PersistentClient) or a `chroma run` server (HttpClient).

We always hand Chroma our own vectors and our own embedding function, so it never tries to
download its default ONNX model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexConfig
from .embedding import Embedder
from .errors import IndexError_

_BATCH = 1000


class _OwnEmbeddingFunction:
    """Chroma's embedding-function protocol over our Embedder (used only if Chroma asks)."""

    def __init__(self, embedder: Embedder | None) -> None:
        self._embedder = embedder

    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:  # noqa: A002 - Chroma's name
        if self._embedder is None:
            raise IndexError_("the dense index was asked to embed text without an embedder")
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


def _client(config: IndexConfig, data_dir: Path):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    try:
        if config.chroma == "http":
            return chromadb.HttpClient(host=config.chroma_host, port=config.chroma_port, settings=settings)
        return chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=settings)
    except Exception as exc:  # chromadb raises bare Exceptions for connection and store problems
        where = f"{config.chroma_host}:{config.chroma_port}" if config.chroma == "http" else data_dir / "chroma"
        raise IndexError_(
            f"cannot open the Chroma store at {where} ({exc}); "
            + ("start it with `chroma run --host 127.0.0.1 --port PORT`" if config.chroma == "http"
               else "run `footnotes reindex` to rebuild it")
        ) from None


class DenseIndex:
    """Chunk vectors in a Chroma collection, keyed by chunk id, with cosine distance."""

    def __init__(self, config: IndexConfig, data_dir: Path, embedder: Embedder | None = None) -> None:
        self.config = config
        self._client = _client(config, data_dir)
        self._ef = _OwnEmbeddingFunction(embedder)
        self._collection = self._open()

    def _open(self):
        return self._client.get_or_create_collection(
            name=self.config.collection, embedding_function=self._ef, metadata={"hnsw:space": "cosine"}
        )

    def reset(self) -> None:
        """Drop every vector (used when the embedding model changes, and by reindex)."""
        try:
            self._client.delete_collection(self.config.collection)
        except Exception:  # noqa: BLE001 - Chroma raises a bare error when the collection is missing
            pass
        self._collection = self._open()

    def count(self) -> int:
        return self._collection.count()

    def ids(self) -> set[str]:
        out: set[str] = set()
        total = self.count()
        for offset in range(0, total, 10_000):
            out.update(self._collection.get(limit=10_000, offset=offset, include=[])["ids"])
        return out

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, doc_ids: Sequence[str]) -> None:
        """Add or replace vectors (N, D) for chunk ``ids`` of documents ``doc_ids``."""
        for lo in range(0, len(ids), _BATCH):
            hi = lo + _BATCH
            self._collection.upsert(
                ids=list(ids[lo:hi]),
                embeddings=vectors[lo:hi],  # (b, D)
                metadatas=[{"doc_id": d} for d in doc_ids[lo:hi]],
            )

    def delete(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        for lo in range(0, len(ids), _BATCH):
            self._collection.delete(ids=ids[lo : lo + _BATCH])

    def search(self, vector: np.ndarray, k: int, allowed: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Top-k (chunk id, cosine similarity) for a query vector (D,); ``allowed`` restricts the ids."""
        total = self.count()
        if total == 0 or k <= 0 or (allowed is not None and not allowed):
            return []
        kwargs: dict[str, Any] = {}
        if allowed is not None:
            kwargs["ids"] = list(allowed)
        res = self._collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=min(k, total if allowed is None else len(allowed)),
            include=["distances"],
            **kwargs,
        )
        return [(cid, 1.0 - float(dist)) for cid, dist in zip(res["ids"][0], res["distances"][0])]
