"""The reader extension point: a question and chunk texts in, scored candidate spans out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class SpanCandidate:
    """A span of one chunk: ``text == chunk_text[start:end]`` (offsets into the chunk's text) and
    its log p(span | z, x) under the reader."""

    start: int
    end: int
    text: str
    logprob: float


@runtime_checkable
class Reader(Protocol):
    """Scores answer spans of retrieved chunks (REALM's reader, Guu et al. 2020)."""

    def read(self, question: str, chunk_texts: Sequence[str]) -> list[tuple[SpanCandidate, ...]]:
        """Candidate spans of each chunk with log p(span | z, x), one tuple per chunk, in order.

        Several chunks come in one call so that a reader can batch them; a chunk may get no
        candidate (the reader found nothing it could extract).
        """
        ...


def candidate(chunk_text: str, start: int, end: int, logprob: float) -> SpanCandidate:
    """A SpanCandidate whose text is read from the chunk at the offsets (never retyped)."""
    if not 0 <= start < end <= len(chunk_text):
        raise ValueError(f"span {start}:{end} is not inside a chunk of {len(chunk_text)} characters")
    return SpanCandidate(start, end, chunk_text[start:end], float(logprob))
