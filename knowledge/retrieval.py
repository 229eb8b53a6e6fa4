"""Hybrid retrieval: dense (Chroma) + sparse (BM25), fused; hits are assembled from the manifest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import RetrievalConfig
from .errors import ConfigError
from .fusion import FUSIONS, NEEDS_ALL_SCORES, complete_scores, keep_decisive_first, with_missed
from .store import KnowledgeStore
from .types import Hit


@dataclass(frozen=True)
class Filters:
    """Restrict hits to documents whose id starts with ``prefix`` and has one of ``suffixes``."""

    prefix: str = ""
    suffixes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.prefix or self.suffixes)


class HybridRetriever:
    """``search`` returns the top-k chunks by fused score, with each retriever's own score."""

    def __init__(self, store: KnowledgeStore, config: RetrievalConfig) -> None:
        if config.fusion not in FUSIONS:
            raise ConfigError(f"retrieval.fusion = '{config.fusion}': use one of {', '.join(FUSIONS)}")
        self.store = store
        self.config = config

    def search(self, query: str, k: int | None = None, filters: Filters | None = None) -> list[Hit]:
        return self._search(query, k or self.config.k, filters or Filters(), ("dense", "bm25"))

    def search_dense(self, query: str, k: int, filters: Filters | None = None) -> list[Hit]:
        return self._search(query, k, filters or Filters(), ("dense",))

    def search_bm25(self, query: str, k: int, filters: Filters | None = None) -> list[Hit]:
        return self._search(query, k, filters or Filters(), ("bm25",))

    def _search(self, query: str, k: int, filters: Filters, use: Sequence[str]) -> list[Hit]:
        if not query.strip() or k <= 0:
            return []
        allowed = self.store.manifest.chunk_ids_where(filters.prefix, filters.suffixes) if filters.active else None
        n = max(k, self.config.candidates)
        vector = self.store.embedder.embed_batch([query])[0] if "dense" in use else None  # (D,)
        dense = self._dense(vector, n, allowed) if vector is not None else []
        sparse = self._bm25(query, n, allowed) if "bm25" in use else []
        dense_s, bm25_s = dict(dense), dict(sparse)  # each retriever's own scores of what it returned
        if dense and sparse:  # BM25 is exhaustive; HNSW is not: score BM25's candidates exactly
            exact = self.store.dense.similarities(vector, [c for c, _ in sparse])
            if self.config.fusion in NEEDS_ALL_SCORES:
                with self.store.lock:
                    bm25_of = self.store.bm25.scores_of(query, [c for c, _ in dense])
                dense, sparse = complete_scores(dense, sparse, exact, bm25_of)
            else:
                dense = with_missed(dense, exact)
            ranked = {c for c, _ in dense}
            dense_s.update({c: s for c, s in exact.items() if c in ranked})
        fused = {}
        if len(use) > 1:
            w = self.config.dense_weight
            fused = FUSIONS[self.config.fusion]([dense, sparse], [w, 1 - w], self.config.rrf_k)
            fused = keep_decisive_first(fused, sparse, self.config.decisive_ratio)
        order = sorted(fused, key=fused.__getitem__, reverse=True) if fused else [c for c, _ in (dense or sparse)]
        chunks = self.store.manifest.chunks(order[: k * 2])  # ids gone from the manifest drop out here
        hits = [
            Hit(chunks[c], fused.get(c, dense_s.get(c, bm25_s.get(c, 0.0))), dense_s.get(c), bm25_s.get(c))
            for c in order if c in chunks
        ]
        return hits[:k]

    def _dense(self, vector, n: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        return self.store.dense.search(vector, n, None if allowed is None else sorted(allowed))

    def _bm25(self, query: str, n: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        with self.store.lock:
            return self.store.bm25.search(query, n, None if allowed is None else allowed.__contains__)
