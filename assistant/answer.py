"""What every answer mode returns: a frozen ``Answer`` with its chunks and per-token provenance.

JSON form (CLI, HTTP API)::

    {"answer", "mode",
     "chunks": [{"chunk_id", "source", "start", "end", "text", "score", "prior", "posterior"}],
     "tokens": [{"text", "prob", "posterior": [k floats],
                 "support": {"label": "document" | "model", "chunk": index or null,
                             "pmi": [k floats or null], "closed_book": p or null, "content": bool}}]}

plus ``"n_best"`` when a mode ranks several answers (RAG-Sequence, REALM) and ``"spans":
[{"chunk_id", "source", "start", "end", "prob", "text"}]`` for extractive answers (REALM, document
offsets). Fields that a mode does not fill (REALM spans) are left out of the JSON; a mode's own
token fields (kNN-LM: ``"neighbours"``, ``"knn_share"``) come from its ``TokenProvenance.extra``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from knowledge.types import Hit


@dataclass(frozen=True)
class RetrievedChunk:
    """A chunk the answer was conditioned on, with the retrieval prior p(z|x) and the posterior
    p(z|x,y) given the whole answer (``None`` where a mode cannot attribute, e.g. ``concat``)."""

    chunk_id: str
    source: str
    start: int
    end: int
    text: str
    heading_path: tuple[str, ...]
    score: float
    prior: float
    posterior: float | None = None

    @classmethod
    def from_hit(cls, hit: Hit, prior: float, posterior: float | None = None) -> "RetrievedChunk":
        c = hit.chunk
        return cls(c.chunk_id, c.doc_id, c.start, c.end, c.text, c.heading_path, hit.score, prior, posterior)

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "score": self.score,
            "prior": self.prior,
            "posterior": self.posterior,
        }


SUPPORT_LABELS = ("document", "model")


@dataclass(frozen=True)
class Support:
    """Where an answer token came from, against the model's own memory (the null document ∅).

    ``label`` is "document" when a retrieved chunk (``chunk``, an index into the answer's chunks)
    made the token markedly more likely than the model alone, "model" when none did: the word came
    from the model's memory or from language alone. ``pmi`` holds PMI_z(y_i) = log p(y_i|x,z,y_<i) −
    log p(y_i|x,∅,y_<i) per chunk in nats (``None`` where a chunk did not score the token);
    ``closed_book`` is p(y_i|x,∅,y_<i). ``content`` marks tokens of content words (names, numbers,
    dates, other words that are neither function words nor taken from the question): a content
    token labelled "model" is what the user must be warned about.
    """

    label: str
    chunk: int | None = None
    pmi: tuple[float | None, ...] = ()
    closed_book: float | None = None
    content: bool = False

    def __post_init__(self) -> None:
        if self.label not in SUPPORT_LABELS:
            raise ValueError(f"support label {self.label!r}: use one of {', '.join(SUPPORT_LABELS)}")

    @property
    def unsupported(self) -> bool:
        """A content word no document supports: the page and the CLI mark it."""
        return self.content and self.label == "model"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "chunk": self.chunk, "pmi": list(self.pmi), "closed_book": self.closed_book,
                "content": self.content}


class ModeEvidence(Protocol):
    """A mode's own part of a token's provenance (kNN-LM: its neighbours and share): a frozen
    dataclass whose JSON keys are added to the token's."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TokenProvenance:
    """One answer token: its text, its probability under the mode's model, and its document
    posterior over the answer's chunks (RAG-Token: p(z | x, y_i, y_<i), the paper's Figure 2;
    empty where a mode has no per-document distribution).

    ``support`` says whether a document or the model's memory explains the token
    (:class:`Support`); ``extra`` is what one mode adds (kNN-LM's ``KnnEvidence``: the retrieved
    contexts and λ·p_kNN's share of ``prob``), ``None`` elsewhere.
    """

    text: str
    prob: float
    posterior: tuple[float, ...] = ()
    support: Support | None = None
    extra: ModeEvidence | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "prob": self.prob, "posterior": list(self.posterior)}
        if self.support is not None:
            out["support"] = self.support.to_json()
        if self.extra is not None:
            out.update(self.extra.to_json())
        return out


@dataclass(frozen=True)
class RankedAnswer:
    """One of a mode's n-best answers: log p(y|x) and p(z|x,y) over the chunks."""

    text: str
    logprob: float
    posterior: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "logprob": self.logprob, "posterior": list(self.posterior)}


@dataclass(frozen=True)
class AnswerSpan:
    """Where an extractive (REALM) answer occurs: ``text`` is exactly the source document's
    characters ``start:end`` (document offsets, not chunk offsets). ``prob`` is this span's share
    p(z|x)·p(span|z,x) of the answer's p(y|x)."""

    chunk_id: str
    source: str
    start: int
    end: int
    prob: float
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "source": self.source, "start": self.start, "end": self.end,
                "prob": self.prob, "text": self.text}


@dataclass(frozen=True)
class Answer:
    """A finished answer. ``"".join(t.text for t in tokens) == text``."""

    text: str
    mode: str
    chunks: tuple[RetrievedChunk, ...] = ()
    tokens: tuple[TokenProvenance, ...] = ()
    n_best: tuple[RankedAnswer, ...] = ()
    spans: tuple[AnswerSpan, ...] = ()

    def cited_chunk(self) -> RetrievedChunk | None:
        """The chunk with the highest posterior (the highest prior where the mode gives none)."""
        if not self.chunks:
            return None
        if all(c.posterior is not None for c in self.chunks):
            return max(self.chunks, key=lambda c: c.posterior or 0.0)
        return max(self.chunks, key=lambda c: c.prior)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "answer": self.text,
            "mode": self.mode,
            "chunks": [c.to_json() for c in self.chunks],
            "tokens": [t.to_json() for t in self.tokens],
        }
        if self.n_best:
            out["n_best"] = [a.to_json() for a in self.n_best]
        if self.spans:
            out["spans"] = [s.to_json() for s in self.spans]
        return out


def chunks_of(hits: Sequence[Hit], priors: Sequence[float], posteriors: Sequence[float] | None) -> tuple[RetrievedChunk, ...]:
    """The answer's chunks, in retrieval order."""
    post: Sequence[float | None] = posteriors if posteriors is not None else [None] * len(hits)
    return tuple(RetrievedChunk.from_hit(h, float(p), None if q is None else float(q)) for h, p, q in zip(hits, priors, post))

