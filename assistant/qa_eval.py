"""Question-answering evaluation: exact match, token F1, answer recall, citation accuracy, speed.

Query file (JSON Lines, one object per line, see docs/evaluation.md)::

    {"id": "...", "question": "...", "gold": ["relative/path.md"], "answers": ["..."]}

plus ``"original": [...]`` on counterfactual queries: answers the documents contradict. Answer
metrics average over the queries that list answers; citation accuracy over the queries that list
gold files; ``leakage`` (an answer states an original) over the queries that list originals.
Token support figures pool the answer tokens inside matched strings: ``support_recall`` is the
share of tokens inside an accepted answer string labelled "document" with a chunk of a gold file,
``memory_caught`` the share of tokens inside an original string labelled "model". A metric with no
such query (or token) is ``None``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import string
import time
from collections import Counter
from dataclasses import dataclass
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


def leakage(prediction: str, original: Sequence[str]) -> float:
    """1.0 if the prediction states one of the values the documents contradict (case-insensitive)."""
    return answer_recall(prediction, original)


def tokens_inside(answer: Answer, strings: Sequence[str]) -> list[int]:
    """Indices of the answer's non-blank tokens that overlap an occurrence (case-insensitive) of
    one of ``strings`` in the answer text."""
    text = answer.text.lower()
    spans = []
    for s in strings:
        needle, start = s.lower(), 0
        while needle and (at := text.find(needle, start)) >= 0:
            spans.append((at, at + len(needle)))
            start = at + 1
    out, pos = [], 0
    for i, t in enumerate(answer.tokens):
        a, b = pos, pos + len(t.text)
        pos = b
        if t.text.strip() and any(a < end and b > start for start, end in spans):
            out.append(i)
    return out


def support_counts(answer: Answer, answers: Sequence[str], original: Sequence[str], gold: Sequence[str]) -> tuple[int, int, int, int]:
    """(answer tokens labelled "document" with a gold chunk, answer tokens, original tokens
    labelled "model", original tokens) for :func:`evaluate_qa`'s pooled support figures."""
    golden = {_path(g) for g in gold}
    inside_answers, inside_original = tokens_inside(answer, answers), tokens_inside(answer, original)

    def from_gold(i: int) -> bool:
        s = answer.tokens[i].support
        return (s is not None and s.label == "document" and s.chunk is not None and s.chunk < len(answer.chunks)
                and _path(answer.chunks[s.chunk].source) in golden)

    def from_model(i: int) -> bool:
        s = answer.tokens[i].support
        return s is not None and s.label == "model"

    return (sum(map(from_gold, inside_answers)), len(inside_answers),
            sum(map(from_model, inside_original)), len(inside_original))


def citation_accuracy(answer: Answer, gold: Sequence[str]) -> float:
    """1.0 if the chunk with the highest posterior (the prior where the mode gives none) comes from a gold file."""
    cited = answer.cited_chunk()
    if cited is None:
        return 0.0
    return float(_path(cited.source) in {_path(g) for g in gold})


def _path(doc_id: str) -> str:
    norm = posixpath.normpath(doc_id.replace("\\", "/"))
    return norm[2:] if norm.startswith("./") else norm


@dataclass(frozen=True)
class ModeMetrics:
    """The QA metrics of one mode (None: no query or token supports the metric)."""

    exact_match: float | None
    f1: float | None
    answer_recall: float | None
    citation_accuracy: float | None
    leakage: float | None
    support_recall: float | None
    memory_caught: float | None
    seconds_per_answer: float | None

    def to_json(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class QAReport:
    """What ``evaluate_qa`` measured: the metrics of each mode, in the order asked."""

    queries: int
    modes: tuple[tuple[str, ModeMetrics], ...]

    def metrics(self, mode: str) -> ModeMetrics:
        return dict(self.modes)[mode]

    def to_json(self) -> dict[str, Any]:
        """``{"<mode>": {metric: value}, ..., "queries": N}`` (the CLI's --json)."""
        return {**{mode: m.to_json() for mode, m in self.modes}, "queries": self.queries}


def evaluate_qa(engine: Asks, queries: Sequence[QAQuery], modes: Sequence[str], k: int | None = None) -> QAReport:
    """Ask every query in every mode and average the metrics per mode."""
    return QAReport(len(queries), tuple((mode, _evaluate_mode(engine, queries, mode, k)) for mode in modes))


def _evaluate_mode(engine: Asks, queries: Sequence[QAQuery], mode: str, k: int | None) -> ModeMetrics:
    rows: dict[str, list[float]] = {"exact_match": [], "f1": [], "answer_recall": [], "citation_accuracy": [],
                                    "leakage": []}
    counts = [0, 0, 0, 0]
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
        if q.original:
            rows["leakage"].append(leakage(answer.text, q.original))
        counts = [a + b for a, b in zip(counts, support_counts(answer, q.answers, q.original, q.gold))]
    return ModeMetrics(
        **{name: _mean(values) for name, values in rows.items()},
        support_recall=counts[0] / counts[1] if counts[1] else None,
        memory_caught=counts[2] / counts[3] if counts[3] else None,
        seconds_per_answer=seconds / len(queries) if queries else None,
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
