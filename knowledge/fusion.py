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
- Convex combination with theoretical-minimum normalisation, "TM2C2" (Bruch, Gai & Ingber 2023, An
  Analysis of Fusion Functions for Hybrid Retrieval): score(d) = Σ_r w_r · (s_r(d) − m_r) /
  (max_r − m_r), where m_r is the lowest score retriever r *can* give (cosine: −1, BM25: 0), not the
  lowest it gave. It needs every candidate's score from every retriever (``complete_scores``): a
  document BM25 ranks far ahead of the rest keeps that lead, even when the dense retriever, whose
  scores of a long chunk vary little, did not rank it.

The rankings passed are (dense, BM25), in that order, either possibly empty.

Whatever the fusion, a *decisive* BM25 first hit is kept first (``keep_decisive_first``): when BM25's
best score is at least ``ratio`` times its second best (or it is BM25's only hit), the query has a
term that one chunk holds and the rest do not (an identifier, a code, a rare name). Score-based
fusions lose such a hit when the dense retriever ranks it low (min-max maps BM25's top to 1 however
far ahead it is, and the dense top gets its full weight too); rank fusions lose it the same way.
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


THEORETICAL_MINIMA = (-1.0, 0.0)  # cosine similarity, BM25


def convex_tmm(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Σ_r w_r · (s_r(d) − m_r) / (max_r − m_r), m_r the theoretical minimum (TM2C2); ``k`` is ignored."""
    _check(rankings, weights)
    scores: dict[str, float] = {}
    for ranking, weight, floor in zip(rankings, weights, THEORETICAL_MINIMA):
        if not ranking:
            continue
        span = max(s for _, s in ranking) - floor
        for doc, s in ranking:
            scores[doc] = scores.get(doc, 0.0) + weight * ((s - floor) / span if span > 0 else 1.0)
    return scores


def complete_scores(
    dense: Ranking, sparse: Ranking, dense_of: dict[str, float], bm25_of: dict[str, float]
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Both rankings over the union of their candidates: ``dense_of`` holds the exact cosine of BM25's
    candidates, ``bm25_of`` the BM25 score of the dense candidates (an id BM25 does not match scores 0)."""
    dense_all = dict(dense)
    dense_all.update({d: s for d, s in dense_of.items() if d not in dense_all})
    sparse_all = dict(sparse)
    sparse_all.update({d: bm25_of.get(d, 0.0) for d, _ in dense if d not in sparse_all})
    best_first = lambda scores: sorted(scores.items(), key=lambda item: (-item[1], item[0]))  # noqa: E731
    return best_first(dense_all), best_first(sparse_all)


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


def decisive_first(ranking: Ranking, ratio: float) -> str | None:
    """The id of a ranking's first entry when its score is at least ``ratio`` times the second's (or it
    is the only entry with a positive score); else None. ``ratio`` <= 1 turns the rule off."""
    if ratio <= 1 or not ranking or ranking[0][1] <= 0:
        return None
    second = ranking[1][1] if len(ranking) > 1 else 0.0
    return ranking[0][0] if ranking[0][1] >= ratio * max(second, 0.0) else None


def keep_decisive_first(fused: dict[str, float], sparse: Ranking, ratio: float) -> dict[str, float]:
    """``fused`` with BM25's decisive first hit (``decisive_first``) raised just above the best fused
    score, so it ranks first; unchanged when BM25 has no decisive hit."""
    doc = decisive_first(sparse, ratio)
    if doc is None or not fused or max(fused, key=fused.__getitem__) == doc:
        return fused
    out = dict(fused)
    out[doc] = max(fused.values()) + 1e-6
    return out


def _check(rankings: Sequence[Ranking], weights: Sequence[float]) -> None:
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")


FUSIONS: dict[str, Callable[[Sequence[Ranking], Sequence[float], int], dict[str, float]]] = {
    "weighted-rrf": weighted_rrf,
    "rrf": rrf,
    "weighted-minmax": weighted_minmax,
    "convex-tmm": convex_tmm,
}
NEEDS_ALL_SCORES = frozenset({"convex-tmm"})  # fusions that read every candidate's score from both retrievers
