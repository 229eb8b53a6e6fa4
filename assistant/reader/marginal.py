"""The REALM marginal (Guu et al. 2020, "REALM: Retrieval-Augmented Language Model Pre-Training"),
as small pure torch functions in log space, and the grouping of spans into answer strings.

Notation: x the question, z one of the k retrieved chunks, s a span of z, y an answer string,
S the number of scored spans, A the number of distinct answer strings:

    p(y|x) = Σ_z p(z|x) · p(y|z,x),    p(y|z,x) = Σ_{s ∈ z, text(s) = y} p(s|z,x).

Answer strings are compared after :func:`normalize_span_text` (case and whitespace), so equal
answers from different chunks, or from two places of one chunk, are merged by that sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


def normalize_span_text(text: str) -> str:
    """The key under which spans are merged: stripped, whitespace runs collapsed, case-folded."""
    return " ".join(text.split()).casefold()


def realm_answer_logprobs(
    span_logprobs: torch.Tensor, span_chunks: torch.Tensor, span_answers: torch.Tensor, n_answers: int, k: int
) -> torch.Tensor:
    """log p(y_a | z, x) = log Σ_{s ∈ z, text(s) = y_a} p(s | z, x), -inf where z has no such span.

    span_logprobs: (S,) log p(s | z_s, x); span_chunks: (S,) chunk index z_s of each span;
    span_answers: (S,) answer index a_s of each span.  Returns (A, k).
    """
    flat = span_answers.long() * k + span_chunks.long()  # (S,) cell of each span in the (A, k) table
    cells = n_answers * k
    peak = torch.full((cells,), -math.inf, dtype=span_logprobs.dtype)  # (A*k,)
    peak = peak.scatter_reduce(0, flat, span_logprobs, reduce="amax")  # (A*k,) max per cell, for stability
    shift = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # (A*k,)
    sums = torch.zeros(cells, dtype=span_logprobs.dtype).index_add(0, flat, (span_logprobs - shift[flat]).exp())  # (A*k,)
    return (sums.log() + shift).view(n_answers, k)  # (A, k); log 0 = -inf for empty cells


def realm_marginal(answer_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """log p(y|x) = log Σ_z p(z|x) · p(y|z,x).

    answer_logprobs: (A, k) log p(y_a|z,x); doc_logprior: (k,) log p(z|x).  Returns (A,).
    """
    return torch.logsumexp(answer_logprobs + doc_logprior.unsqueeze(0), dim=-1)  # (A, k) -> (A,)


def realm_posterior(answer_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """p(z | x, y) = p(z|x) · p(y|z,x) / Σ_z' p(z'|x) · p(y|z',x): which chunks explain each answer.

    answer_logprobs: (A, k); doc_logprior: (k,).  Returns probabilities (A, k), each row summing to 1.
    """
    return torch.softmax(answer_logprobs + doc_logprior.unsqueeze(0), dim=-1)  # (A, k)


@dataclass(frozen=True)
class ChunkSpan:
    """A reader's span of chunk ``chunk`` (index among the k hits), offsets into that chunk's text."""

    chunk: int
    start: int
    end: int
    text: str
    logprob: float  # log p(s | z, x)


@dataclass(frozen=True)
class MarginalAnswer:
    """One answer string with log p(y|x), p(z|x,y) over the k chunks, and its spans, each with its
    share p(z|x)·p(s|z,x) of p(y|x) (the shares sum to p(y|x)), largest first. ``text`` is the
    original text of the largest span (merging ignores case and spacing; display keeps them)."""

    text: str
    logprob: float
    posterior: tuple[float, ...]
    spans: tuple[tuple[ChunkSpan, float], ...]


def marginalize_spans(spans: Sequence[ChunkSpan], doc_logprior: torch.Tensor) -> list[MarginalAnswer]:
    """Group spans into answer strings and rank them by p(y|x), most probable first.

    doc_logprior: (k,) log p(z|x). Identical spans (same chunk and offsets) must not repeat.
    """
    if not spans:
        return []
    k = doc_logprior.shape[0]
    keys: dict[str, int] = {}
    answer_of = [keys.setdefault(normalize_span_text(s.text), len(keys)) for s in spans]
    logprobs = torch.tensor([s.logprob for s in spans], dtype=torch.float64)  # (S,)
    chunks = torch.tensor([s.chunk for s in spans])  # (S,)
    prior = doc_logprior.double()  # (k,)
    table = realm_answer_logprobs(logprobs, chunks, torch.tensor(answer_of), len(keys), k)  # (A, k)
    marginal = realm_marginal(table, prior)  # (A,)
    posterior = realm_posterior(table, prior)  # (A, k)
    shares = (logprobs + prior[chunks]).exp().tolist()  # (S,) p(z|x) p(s|z,x)
    members: list[list[tuple[ChunkSpan, float]]] = [[] for _ in keys]
    for span, a, share in zip(spans, answer_of, shares):
        members[a].append((span, share))
    out = []
    for a in marginal.argsort(descending=True).tolist():
        ranked = tuple(sorted(members[a], key=lambda m: (-m[1], m[0].chunk, m[0].start)))
        out.append(MarginalAnswer(ranked[0][0].text, float(marginal[a]), tuple(posterior[a].tolist()), ranked))
    return out
