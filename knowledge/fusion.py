"""Fusion of the dense and BM25 rankings, as small pure functions.

Every fusion takes the same arguments: ``rankings``, each a best-first list of (id, score) from one
retriever; ``weights``, one per ranking; and ``k``, the constant of reciprocal rank fusion (ignored
by the score-based fusions). It returns ``{id: fused score}`` for every id in any ranking.

- Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): score(d) = Σ_r w_r / (k + rank_r(d)),
  ranks starting at 1; a ranking that did not return d contributes nothing. Equal weights give
  plain RRF.
- Weighted mix of min-max normalised scores ("relative score fusion"): score(d) =
  Σ_r w_r · (s_r(d) − min_r) / (max_r − min_r), where min_r and max_r are taken over ranking r's
  candidates and a ranking that did not return d contributes 0. Unlike RRF it keeps how far apart
  the scores are, so a clear winner of one retriever is not flattened to "rank 1".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Ranking = Sequence[tuple[str, float]]  # (id, score), best first


def weighted_rrf(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Σ_r w_r / (k + rank_r(d)) for every id in any ranking."""
    _check(rankings, weights)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (doc, _) in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return scores


def rrf(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Plain reciprocal rank fusion: the weights are ignored (every ranking counts the same)."""
    _check(rankings, weights)
    return weighted_rrf(rankings, [1.0] * len(rankings), k)


def weighted_minmax(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Σ_r w_r · minmax_r(s_r(d)) for every id in any ranking; ``k`` is ignored.

    A ranking whose scores are all equal normalises them to 1.
    """
    _check(rankings, weights)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        values = [s for _, s in ranking]
        low, span = min(values), max(values) - min(values)
        for doc, s in ranking:
            scores[doc] = scores.get(doc, 0.0) + weight * ((s - low) / span if span > 0 else 1.0)
    return scores


def with_missed(ranking: Ranking, exact: dict[str, float]) -> list[tuple[str, float]]:
    """``ranking`` plus the ids of ``exact`` (id -> exact score) it should have returned: those scoring at
    least its lowest score (an approximate search such as HNSW can miss them), best first.

    Ids scoring below the ranking's lowest are left out, so an exact search is returned unchanged.
    """
    if not ranking:
        return list(ranking)
    have = {doc for doc, _ in ranking}
    floor = min(s for _, s in ranking)
    missed = [(doc, s) for doc, s in exact.items() if doc not in have and s >= floor]
    return sorted([*ranking, *missed], key=lambda item: (-item[1], item[0])) if missed else list(ranking)


def _check(rankings: Sequence[Ranking], weights: Sequence[float]) -> None:
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")


FUSIONS: dict[str, Callable[[Sequence[Ranking], Sequence[float], int], dict[str, float]]] = {
    "weighted-rrf": weighted_rrf,
    "rrf": rrf,
    "weighted-minmax": weighted_minmax,
}
