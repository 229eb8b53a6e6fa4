"""Question-answering evaluation: exact match, token F1, answer recall, citation accuracy, speed.

Query file (JSON Lines, one object per line, see DESIGN.md)::

    {"id": "...", "question": "...", "gold": ["relative/path.md"], "answers": ["..."]}

Answer metrics average over the queries that list answers; citation accuracy over the queries
that list gold files; a metric with no such query is ``None``.
"""

from __future__ import annotations

import posixpath
import re
import string
import time
from collections import Counter
from typing import Any, Protocol, Sequence

from knowledge.evaluation import Query as QAQuery  # noqa: F401 - the query type of every evaluation
from knowledge.evaluation import read_queries as load_queries  # noqa: F401

from .answer import Answer


class Asks(Protocol):
    def ask(self, question: str, history: Sequence[Any] = (), mode: str | None = None, k: int | None = None) -> Answer: ...


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised accepted answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best SQuAD token F1 of the prediction against the accepted answers."""
    return max((_f1(prediction, a) for a in answers), default=0.0)


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_recall(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if an accepted answer string occurs in the prediction, case-insensitive."""
    low = prediction.lower()
    return float(any(a.lower() in low for a in answers if a))


def citation_accuracy(answer: Answer, gold: Sequence[str]) -> float:
    """1.0 if the chunk with the highest posterior (the prior where the mode gives none) comes from a gold file."""
    cited = answer.cited_chunk()
    if cited is None:
        return 0.0
    return float(_path(cited.source) in {_path(g) for g in gold})


def _path(doc_id: str) -> str:
    norm = posixpath.normpath(doc_id.replace("\\", "/"))
    return norm[2:] if norm.startswith("./") else norm


def evaluate_qa(engine: Asks, queries: Sequence[QAQuery], modes: Sequence[str], k: int | None = None) -> dict[str, Any]:
    """``{"<mode>": {"exact_match", "f1", "answer_recall", "citation_accuracy", "seconds_per_answer"}, "queries": N}``."""
    report: dict[str, Any] = {}
    for mode in modes:
        rows: dict[str, list[float]] = {"exact_match": [], "f1": [], "answer_recall": [], "citation_accuracy": []}
        seconds = 0.0
        for q in queries:
            start = time.perf_counter()
            answer = engine.ask(q.question, (), mode=mode, k=k)
            seconds += time.perf_counter() - start
            if q.answers:
                rows["exact_match"].append(exact_match(answer.text, q.answers))
                rows["f1"].append(token_f1(answer.text, q.answers))
                rows["answer_recall"].append(answer_recall(answer.text, q.answers))
            if q.gold:
                rows["citation_accuracy"].append(citation_accuracy(answer, q.gold))
        report[mode] = {name: _mean(values) for name, values in rows.items()}
        report[mode]["seconds_per_answer"] = seconds / len(queries) if queries else None
    report["queries"] = len(queries)
    return report


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
