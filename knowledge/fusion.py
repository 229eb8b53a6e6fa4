"""Rank fusion of the dense and BM25 rankings, as small pure functions.

Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): score(d) = Σ_r w_r / (k + rank_r(d)),
ranks starting at 1; a ranking that did not return d contributes nothing. Equal weights give plain RRF.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def weighted_rrf(rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Σ_r w_r / (k + rank_r(d)) for every id in any ranking."""
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return scores


def rrf(rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Plain reciprocal rank fusion: the weights are ignored (every ranking counts the same)."""
    return weighted_rrf(rankings, [1.0] * len(rankings), k)


FUSIONS: dict[str, Callable[[Sequence[Sequence[str]], Sequence[float], int], dict[str, float]]] = {
    "weighted-rrf": weighted_rrf,
    "rrf": rrf,
}
