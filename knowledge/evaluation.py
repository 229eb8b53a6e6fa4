"""Retrieval evaluation on a corpus folder and a JSON Lines query file (format: docs/evaluation.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .types import Hit


@dataclass(frozen=True)
class Query:
    id: str
    question: str
    gold: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    original: tuple[str, ...] = ()  # counterfactual sets: answers the documents contradict (from memory)


def read_queries(path: str | Path) -> list[Query]:
    """Read a query file; a malformed line fails with its file, number and what is wrong."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the query file {p}: {exc.strerror or exc}") from None
    return [_query_of(line, f"{p}:{n}") for n, line in enumerate(lines, 1) if line.strip()]


def _query_of(line: str, where: str) -> Query:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(row, dict) or not isinstance(row.get("question"), str):
        raise ConfigError(f'{where}: each line must be an object with a "question" string')
    gold, answers, original = row.get("gold", []), row.get("answers", []), row.get("original", [])
    if not all(isinstance(x, list) and all(isinstance(s, str) for s in x) for x in (gold, answers, original)):
        raise ConfigError(f'{where}: "gold", "answers" and "original" must be lists of strings')
    return Query(str(row.get("id", where)), row["question"], tuple(gold), tuple(answers), tuple(original))


def first_gold_rank(hits: Sequence[Hit], gold: Sequence[str]) -> int | None:
    """1-based rank of the first hit from a gold file, or None."""
    wanted = set(gold)
    return next((i for i, h in enumerate(hits, 1) if h.doc_id in wanted), None)


def retrieval_metrics(ranks: Sequence[int | None], cutoffs: Sequence[int] = (1, 5, 10), mrr_at: int = 10) -> dict[str, float]:
    """recall@k (share of queries with a gold hit in the top k) and MRR@mrr_at from first-gold ranks."""
    n = max(len(ranks), 1)
    out = {f"recall@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in cutoffs}
    out[f"mrr@{mrr_at}"] = sum(1.0 / r for r in ranks if r is not None and r <= mrr_at) / n
    return out


@dataclass(frozen=True)
class RetrievalReport:
    """What ``evaluate_retrieval`` measured: the metrics of each searcher, in the order given."""

    queries: int
    searchers: tuple[tuple[str, Mapping[str, float]], ...]  # (name, {"recall@k": ..., "mrr@10": ...})

    def metrics(self, name: str) -> Mapping[str, float]:
        return dict(self.searchers)[name]

    def to_json(self) -> dict[str, Any]:
        """``{name: metrics, ..., "queries": N}`` (the CLI's --json)."""
        return {**{name: dict(m) for name, m in self.searchers}, "queries": self.queries}


def evaluate_retrieval(searchers: dict[str, Callable[[str, int], list[Hit]]], queries: Sequence[Query],
                       k: int = 10) -> RetrievalReport:
    """Run every searcher on every query."""
    cutoffs = tuple(sorted({1, 5, 10, k}))
    rows = []
    for name, search in searchers.items():
        ranks = [first_gold_rank(search(q.question, max(k, 10)), q.gold) for q in queries]
        rows.append((name, MappingProxyType(retrieval_metrics(ranks, cutoffs, mrr_at=10))))
    return RetrievalReport(len(queries), tuple(rows))
