"""Structure-aware chunking: sections between headings, whole paragraphs packed up to a token budget.

A chunk never crosses a heading: each section (a heading line and the text up to the next heading)
is chunked on its own, and its heading line starts its first chunk. Within a section, paragraphs
(split at blank lines) are packed whole up to ``size_tokens``; a longer paragraph is cut at sentence
ends where possible, else at word or token boundaries, and its consecutive pieces share
``overlap_tokens`` tokens. Each section is tokenized once; packing works on the token spans. When the
tokenizer also gives token ids (``bert_encoder.Tokens``), each chunk keeps the ids of its tokens, so the
embedder need not tokenize its text again.

Invariant: ``chunk.text == doc.text[chunk.start:chunk.end]``, with no leading/trailing whitespace.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .types import Chunk, LoadedDocument

Span = tuple[int, int]

_WORD = re.compile(r"\S+")
_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")
# Where a sentence starts inside a paragraph: after . ! ? (and closing quotes or brackets) and
# whitespace, before something that is not a lower-case letter. A line starts after a newline.
_SENTENCE_START = re.compile(r"[.!?…。！？][\"'”’)\]]*\s+(?![a-z])")
_LINE_START = re.compile(r"\n\s*")


class TokenSpans(Protocol):
    """Splits text into tokens; returns each token's (start, end) character span, in order."""

    def __call__(self, text: str) -> list[Span]: ...


def whitespace_token_spans(text: str) -> list[Span]:
    """Tokens are runs of non-whitespace (for tests and tokenizer-free use)."""
    return [m.span() for m in _WORD.finditer(text)]


def hf_token_spans(tokenizer: Any) -> TokenSpans:
    """Token spans from a Hugging Face *fast* tokenizer (offset mapping, no special tokens)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer and cannot report character offsets; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )

    def spans(text: str) -> list[Span]:
        if not text:
            return []
        encoding = tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # a whole section is longer than the model's window, and that is fine here
        )
        return [(start, end) for start, end in encoding["offset_mapping"] if end > start]

    return spans


def make_chunk_id(doc_id: str, text: str, occurrence: int) -> str:
    """A content-derived id (32 hex chars): sha256 of doc id, NUL, text, NUL, and the index of this
    text among identical chunk texts of the document. An unchanged chunk keeps its id when other
    parts of the document change."""
    digest = hashlib.sha256()
    for part in (doc_id, "\0", text, "\0", str(occurrence)):
        digest.update(part.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def chunk_document(doc: LoadedDocument, spans: TokenSpans, size_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """Split ``doc`` into chunks of at most ``size_tokens`` tokens (as counted by ``spans``)."""
    if size_tokens < 1:
        raise ValueError(f"size_tokens must be at least 1, got {size_tokens}")
    if not 0 <= overlap_tokens < size_tokens:
        raise ValueError(f"overlap_tokens must be >= 0 and < size_tokens ({size_tokens}), got {overlap_tokens}")
    chunks, seen = [], Counter()
    for section in sections(doc):
        for start, end, token_ids in _chunk_section(doc.text, section, spans, size_tokens, overlap_tokens):
            text = doc.text[start:end]
            chunk_id = make_chunk_id(doc.doc_id, text, seen[text])
            seen[text] += 1
            chunks.append(Chunk(chunk_id, doc.doc_id, start, end, text, heading_path=section.heading_path,
                                token_ids=token_ids))
    return chunks


@dataclass(frozen=True)
class Section:
    """``text[start:end]`` runs from a heading line (or the start) to the next heading (or the end)."""

    start: int
    end: int
    heading_path: tuple[str, ...]


def sections(doc: LoadedDocument) -> list[Section]:
    """The document cut at every heading, each with the titles of its enclosing headings."""
    size = len(doc.text)
    out: list[Section] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    start, path = 0, ()
    for offset, level, title in sorted(doc.headings, key=lambda h: h[0]):
        offset = min(max(offset, 0), size)
        if offset > start:
            out.append(Section(start, offset, path))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        start, path = offset, tuple(t for _, t in stack)
    out.append(Section(start, size, path))
    return out


def _chunk_section(text: str, section: Section, spans: TokenSpans, size: int,
                   overlap: int) -> Iterator[tuple[int, int, tuple[int, ...] | None]]:
    """Absolute (start, end) of the chunks of one section, trimmed and non-empty, with the token ids of
    each chunk's text when ``spans`` gives ids (None otherwise)."""
    body = text[section.start : section.end]
    if not body.strip():
        return
    tokens = spans(body)
    ids = getattr(tokens, "ids", None)
    starts = [start for start, _ in tokens] if ids is not None else []
    for start, end in _pack(body, tokens, size, overlap):
        start, end = _trim(body, start, end)
        if end > start:
            yield section.start + start, section.start + end, _ids_within(body, tokens, starts, ids, start, end)


_SEPARATORS = frozenset(" \t\n\r")  # what every tokenizer splits words at (Python's isspace is wider)


def _ids_within(body: str, tokens: list[Span], starts: list[int], ids, start: int, end: int) -> tuple[int, ...] | None:
    """The ids of the section's tokens inside ``body[start:end]`` when they are exactly the tokens of that text
    alone: it is cut from the section at whitespace (or the section's ends), so no word is split and
    tokenizing it again would give the same tokens. None otherwise (e.g. a piece cut inside a long word)."""
    if ids is None or (start > 0 and body[start - 1] not in _SEPARATORS) or (
            end < len(body) and body[end] not in _SEPARATORS):
        return None
    first, stop = bisect_left(starts, start), bisect_left(starts, end)
    if (first > 0 and tokens[first - 1][1] > start) or (stop > first and tokens[stop - 1][1] > end):
        return None  # a token that straddles the cut
    return tuple(ids[first:stop])


def _pack(body: str, tokens: list[Span], size: int, overlap: int) -> Iterator[Span]:
    """Whole paragraphs packed up to ``size`` tokens; an oversized paragraph is split into pieces.

    A short chunk in progress (a heading line, an intro sentence) is kept as the head of the first
    piece of an oversized paragraph that follows it, rather than left as a chunk of its own.
    """
    starts = [start for start, _ in tokens]
    current: list[int] | None = None  # [start, end, tokens] of the chunk being filled
    stop = 0
    for p_start, p_end in _paragraphs(body):
        # tokens[first:stop] start in this paragraph or in the gap before it
        first, stop = stop, bisect_left(starts, p_end, stop)
        count = stop - first
        if current and current[2] + count <= size:
            current[1:] = [p_end, current[2] + count]
            continue
        run, head_tokens = _Run(p_start, p_end, first, stop), 0
        if current and count > size and current[2] <= size // 4 and size - current[2] > 2 * overlap:
            run, head_tokens = _Run(current[0], p_end, first, stop), current[2]
        elif current:
            yield current[0], current[1]
        current = None
        if count <= size:
            current = [p_start, p_end, count]
        else:
            yield from _split_paragraph(body, tokens, starts, run, head_tokens, size, overlap)
    if current:
        yield current[0], current[1]


def _paragraphs(body: str) -> Iterator[Span]:
    """(start, end) of each run of text between blank lines."""
    at = 0
    for gap in _BLANK_LINES.finditer(body):
        yield at, gap.start()
        at = gap.end()
    yield at, len(body)


@dataclass(frozen=True)
class _Run:
    """An oversized paragraph: its text ``body[start:end]`` (maybe with a short head before it) and
    its tokens ``tokens[first:stop]``."""

    start: int
    end: int
    first: int
    stop: int


def _split_paragraph(
    body: str, tokens: list[Span], starts: list[int], run: _Run, head_tokens: int, size: int, overlap: int
) -> Iterator[Span]:
    """Pieces of ``run`` of at most ``size`` tokens (the first has ``head_tokens`` fewer), consecutive
    ones sharing ``overlap`` tokens.

    A piece ends before the last sentence start in its second half, else the last line start there,
    else the last word start, else after exactly its budget of tokens. The next piece starts
    ``overlap`` tokens before that cut, moved back (by up to ``overlap`` more) to a sentence, line or
    word start.
    """
    first, stop = run.first, run.stop
    breaks = (
        _starts_matching(_SENTENCE_START, body, starts, run),
        _starts_matching(_LINE_START, body, starts, run),
        [k for k in range(first + 1, stop) if tokens[k][0] > tokens[k - 1][1]],  # word starts
    )
    piece, piece_start, budget = first, run.start, size - head_tokens
    while stop - piece > budget:
        limit = piece + budget
        cut = _best_break(breaks, piece + max(overlap + 1, budget // 2), limit, default=limit)
        yield piece_start, tokens[cut - 1][1]
        resume = cut - overlap  # > piece, as cut > piece + overlap
        piece = _best_break(breaks, max(piece + 1, resume - overlap), resume, default=resume)
        piece_start, budget = tokens[piece][0], size
    yield piece_start, run.end


def _starts_matching(pattern: re.Pattern, body: str, starts: list[int], run: _Run) -> list[int]:
    """Indices k in (first, stop) of the run's tokens that begin right where a match of ``pattern`` ends."""
    first, stop = run.first, run.stop
    found = []
    for m in pattern.finditer(body, starts[first], run.end):
        k = bisect_left(starts, m.end(), first, stop)
        if first < k < stop and starts[k] == m.end():
            found.append(k)
    return found


def _best_break(breaks: tuple[list[int], ...], low: int, high: int, default: int) -> int:
    """The last break in [low, high] of the first kind (sentence, line, word) that has one there."""
    for kind in breaks:
        found = _last_in(kind, low, high)
        if found is not None:
            return found
    return default


def _last_in(sorted_values: list[int], low: int, high: int) -> int | None:
    """The largest value v with low <= v <= high, or None."""
    i = bisect_right(sorted_values, high) - 1
    return sorted_values[i] if i >= 0 and sorted_values[i] >= low else None


def _trim(body: str, start: int, end: int) -> Span:
    piece = body[start:end]
    stripped = piece.strip()
    if not stripped:
        return start, start
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + lead + len(stripped)
