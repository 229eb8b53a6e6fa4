"""Greedy and beam search over a batch of prompts decoded in lockstep.

A *beam* owns R consecutive rows of the batch and scores the next token by combining their
log-probs: RAG-Token mixes its k document rows (R = k); a plain LM or one RAG-Sequence
document has R = 1. Beams belong to *groups* searched independently (RAG-Sequence: one group
per document). Hypotheses keep, per token, the log-prob under each of their rows: the
provenance of every answer token is computed from those.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Collection, Iterator, Sequence

import torch

from .grounding import (
    contradicted,
    follow_contradicting,
    grounded_doc_logprobs,
    grounded_mixture_logprobs,
    where_contradicted,
)
from .lockstep import LockstepBatch
from .marginals import rag_token_marginalize

# (beams, R, V) log-probs of each row -> (beams, V) log-probs of the beam's next token
Combine = Callable[[torch.Tensor], torch.Tensor]
# (the answer's token ids so far, (V,) combined log-probs, (R, V) each row's log-probs) -> the next token
Choose = Callable[[Sequence[int], torch.Tensor, torch.Tensor], int]


# (a hypothesis' token ids so far, (V,) its next-token scores, n) -> its n best (token, score), best first
Shortlist = Callable[[Sequence[int], torch.Tensor, int], list[tuple[int, float]]]


def argmax_choice(ids: Sequence[int], scores: torch.Tensor, row_logprobs: torch.Tensor) -> int:
    """Greedy's own choice: the best-scored token."""
    return int(scores.argmax())


def single_row(row_logprobs: torch.Tensor) -> torch.Tensor:
    """Combine for R = 1: the row's own distribution.  (beams, 1, V) -> (beams, V)"""
    return row_logprobs[:, 0]


def mixture(doc_logprior: torch.Tensor) -> Combine:
    """Combine for RAG-Token: the mixture Σ_z p(z|x) p(y_i|x,z,y_<i) of the beam's k rows."""
    return lambda row_logprobs: rag_token_marginalize(row_logprobs, doc_logprior)  # (beams, k, V) -> (beams, V)


@dataclass(frozen=True)
class Contrast:
    """How each chunk's distribution is contrasted with the null document's (the closed-book row):
    context-aware decoding's α (AdaCAD's JSD-scaled α when ``adaptive``) and the plausibility β."""

    alpha: float = 0.0
    adaptive: bool = False
    beta: float = 0.0
    target: str = "chunk"  # "chunk": contrast each chunk's distribution, then mix; "mixture": mix, then contrast;
    # "follow": at a contradicted step (``conflict``) decode from the contradicting chunk alone
    penalty_only: bool = False  # only lower the tokens a chunk made less likely than ∅ (PMI < 0); raise none
    conflict: float = 0.0  # > 0: contrast only at steps where a chunk contradicts plain decoding's token (PMI < −conflict)

    @property
    def active(self) -> bool:
        return self.adaptive or self.alpha != 0 or self.beta > 0 or (self.target == "follow" and self.conflict > 0)


def contrasted_row(contrast: Contrast) -> Combine:
    """Combine for a beam of one chunk row and its null-document row (R = 2): the chunk's
    distribution contrasted with the null's; with an inactive contrast :func:`single_row`."""

    def combine(row_logprobs: torch.Tensor) -> torch.Tensor:
        doc, null = row_logprobs[:, :1], row_logprobs[:, 1]  # (beams, 1, V), (beams, V)
        out = grounded_doc_logprobs(doc, null, contrast.alpha, contrast.adaptive, contrast.beta,
                                    contrast.penalty_only)[:, 0]  # (beams, V)
        if contrast.conflict <= 0 or not contrast.active:
            return out
        return where_contradicted(contradicted(doc, null, doc[:, 0], contrast.conflict), out, doc[:, 0])

    return combine


def grounded_mixture(doc_logprior: torch.Tensor, contrast: Contrast) -> Combine:
    """Combine for a beam of k chunk rows followed by the null-document row (R = k + 1): the
    RAG-Token mixture Σ_z p(z|x) p̃(y_i|x,z,y_<i) of the contrasted chunk distributions; the null
    row only serves as the reference. With an inactive contrast this is :func:`mixture` of the k rows."""
    k = doc_logprior.shape[0]

    def contrasted(docs: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        if contrast.target == "follow":
            return follow_contradicting(docs, null, rag_token_marginalize(docs, doc_logprior))
        if contrast.target == "mixture":
            return grounded_mixture_logprobs(docs, null, doc_logprior, contrast.alpha, contrast.adaptive, contrast.beta,
                                             contrast.penalty_only)
        docs = grounded_doc_logprobs(docs, null, contrast.alpha, contrast.adaptive, contrast.beta,
                                     contrast.penalty_only)  # (beams, k, V)
        return rag_token_marginalize(docs, doc_logprior)  # (beams, V)

    def combine(row_logprobs: torch.Tensor) -> torch.Tensor:
        docs, null = row_logprobs[:, :k], row_logprobs[:, k]  # (beams, k, V), (beams, V)
        if contrast.conflict <= 0 or not contrast.active:
            return contrasted(docs, null)
        plain = rag_token_marginalize(docs, doc_logprior)  # (beams, V)
        return where_contradicted(contradicted(docs, null, plain, contrast.conflict), contrasted(docs, null), plain)

    return combine


@dataclass(frozen=True)
class TokenStep:
    """One chosen token: its combined log-prob and its log-prob under each row of its beam."""

    token_id: int
    logprob: float
    row_logprobs: tuple[float, ...]


@dataclass(frozen=True)
class Hypothesis:
    """A finished (or length-capped) sequence. ``steps`` include the final EOS when ``ended == "eos"``."""

    group: int
    steps: tuple[TokenStep, ...]
    ended: str  # "eos", "stop" (a stop string) or "length" (max_new_tokens)

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(s.token_id for s in self.steps)

    @property
    def answer_steps(self) -> tuple[TokenStep, ...]:
        return self.steps[:-1] if self.ended == "eos" else self.steps

    @property
    def logprob(self) -> float:
        return sum(s.logprob for s in self.steps)

    def rank_score(self, length_penalty: float) -> float:
        return self.logprob / max(len(self.steps), 1) ** length_penalty


def greedy(
    batch: LockstepBatch, combine: Combine, eos_ids: Collection[int], max_new_tokens: int,
    choose: Choose = argmax_choice, *, first_logprobs: torch.Tensor | None = None,
    words: WordEnds | None = None, finish_word_tokens: int = 0,
) -> Iterator[TokenStep]:
    """Greedy decoding of one beam spanning every row; yields each token as it is chosen (not EOS).
    ``choose`` picks the token from the combined scores (the argmax, or a constrained choice such
    as :func:`assistant.quotes.quoted_argmax`'s). ``first_logprobs`` (rows, V): what
    ``batch.prefill()`` returned, when the caller ran it.

    At ``max_new_tokens``, a word still being written is finished rather than cut ("... by Jonathan
    Swift in 172" + "9"): up to ``finish_word_tokens`` more tokens, as long as each one goes on with
    that word (``words``: how the tokenizer writes them).

    The next forward pass runs only when the caller asks for the next token, so stopping the
    iteration (stop string found) costs nothing extra.
    """
    rows = batch.rows
    logprobs = batch.prefill() if first_logprobs is None else first_logprobs  # (R, V)
    limit = max_new_tokens + (finish_word_tokens if words is not None else 0)
    ids: list[int] = []
    while True:
        scores = combine(logprobs.unsqueeze(0))[0]  # (1, R, V) -> (V,)
        token = choose(ids, scores, logprobs)
        if token in eos_ids or (len(ids) >= max_new_tokens and not (words and words.goes_on(ids, token))):
            return
        ids.append(token)
        yield TokenStep(token, float(scores[token]), tuple(logprobs[:, token].tolist()))
        if len(ids) >= limit or (len(ids) >= max_new_tokens and not (words and words.inside(ids))):
            return
        logprobs = batch.step(torch.full((rows,), token, dtype=torch.long))  # (R, V)


class WordEnds:
    """Where an answer's words end, as the tokenizer writes them (``decode``: token ids -> text): whether its text
    ends inside a word (a letter, a digit, or a byte of a character still being written), and whether one more
    token goes on with that word ("172" + "9", "Pelopon" + "nese"; not " more", not ".")."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self.decode = decode

    def inside(self, ids: Sequence[int]) -> bool:
        text = self.decode(ids)
        return bool(text) and _word_character(text[-1])

    def goes_on(self, ids: Sequence[int], token: int) -> bool:
        before, after = self.decode(ids), self.decode([*ids, token])
        return (bool(before) and _word_character(before[-1]) and len(after) > len(before) and after.startswith(before)
                and _word_character(after[len(before)]))


def _word_character(c: str) -> bool:
    return c.isalnum() or c == "\ufffd"


@dataclass(frozen=True)
class _Beam:
    group: int
    rows: tuple[int, ...]  # the beam's rows in the current batch
    steps: tuple[TokenStep, ...] = ()
    score: float = 0.0


def beam_search(
    batch: LockstepBatch,
    first_logprobs: torch.Tensor,
    combine: Combine,
    groups: int,
    width: int,
    eos_ids: Collection[int],
    max_new_tokens: int,
    is_stopped: Callable[[Sequence[int]], bool] = lambda ids: False,
    length_penalty: float = 1.0,
    shortlist: Shortlist | None = None,
) -> list[list[Hypothesis]]:
    """Beam search; the batch's rows are split evenly into ``groups`` initial beams.
    ``first_logprobs`` (rows, V) is what ``batch.prefill()`` returned.

    Each group keeps ``width`` live beams and is done when it has ``width`` finished hypotheses
    (or at ``max_new_tokens``). ``shortlist`` (e.g. the quote constraint's
    :func:`assistant.quotes.quoted_top`) gives each beam's candidate extensions and their scores
    instead of its plain top tokens. Returns, per group, its finished hypotheses best first (by
    logprob / length ** length_penalty).
    """
    if batch.rows % groups:
        raise ValueError(f"{batch.rows} rows cannot be split into {groups} groups")
    per_beam = batch.rows // groups
    beams = [_Beam(g, tuple(range(g * per_beam, (g + 1) * per_beam))) for g in range(groups)]
    finished: list[list[Hypothesis]] = [[] for _ in range(groups)]
    logprobs = first_logprobs  # (rows, V)
    for t in range(max_new_tokens):
        row_logprobs = logprobs.view(len(beams), per_beam, -1)  # (beams, R, V)
        scores = combine(row_logprobs)  # (beams, V)
        totals = torch.tensor([b.score for b in beams]).unsqueeze(-1) + scores  # (beams, V)
        live: list[_Beam] = []
        for g in sorted({b.group for b in beams}):
            mine = [j for j, b in enumerate(beams) if b.group == g]
            candidates = (_extensions(beams, mine, row_logprobs, scores, totals, width) if shortlist is None else
                          _shortlisted(beams, mine, row_logprobs, scores, width, shortlist))
            next_beams = _sort_out(candidates, finished[g], width, eos_ids, is_stopped)
            if len(finished[g]) < width:
                live.extend(next_beams)
        if t + 1 == max_new_tokens:
            for beam in live:
                finished[beam.group].append(Hypothesis(beam.group, beam.steps, "length"))
            break
        if not live:
            break
        logprobs = _advance(batch, live, per_beam)
        beams = [replace(b, rows=tuple(range(j * per_beam, (j + 1) * per_beam))) for j, b in enumerate(live)]
    return [sorted(f, key=lambda h: -h.rank_score(length_penalty))[:width] for f in finished]


def _extensions(
    beams: list[_Beam],
    mine: list[int],
    row_logprobs: torch.Tensor,
    scores: torch.Tensor,
    totals: torch.Tensor,
    width: int,
) -> list[_Beam]:
    """A group's 2 * width best one-token extensions, best first."""
    vocab = totals.shape[-1]
    flat = totals[mine].reshape(-1)  # (beams_in_group * V,)
    values, order = flat.topk(min(2 * width, flat.numel()))
    out = []
    for value, index in zip(values.tolist(), order.tolist()):
        j, token = mine[index // vocab], index % vocab
        step = TokenStep(token, float(scores[j, token]), tuple(row_logprobs[j, :, token].tolist()))
        out.append(_Beam(beams[j].group, beams[j].rows, beams[j].steps + (step,), value))
    return out


def _shortlisted(
    beams: list[_Beam],
    mine: list[int],
    row_logprobs: torch.Tensor,
    scores: torch.Tensor,
    width: int,
    shortlist: Shortlist,
) -> list[_Beam]:
    """A group's 2 * width best one-token extensions among each beam's shortlist, best first; the
    steps keep the plain scores, the beam's running score adds the shortlist's."""
    out = []
    for j in mine:
        beam = beams[j]
        for token, value in shortlist([st.token_id for st in beam.steps], scores[j], 2 * width):
            step = TokenStep(token, float(scores[j, token]), tuple(row_logprobs[j, :, token].tolist()))
            out.append(_Beam(beam.group, beam.rows, beam.steps + (step,), beam.score + value))
    out.sort(key=lambda b: -b.score)
    return out[: 2 * width]


def _sort_out(
    candidates: list[_Beam],
    finished: list[Hypothesis],
    width: int,
    eos_ids: Collection[int],
    is_stopped: Callable[[Sequence[int]], bool],
) -> list[_Beam]:
    """Move ended candidates ranked within the top ``width`` into ``finished``; return up to
    ``width`` live ones."""
    live: list[_Beam] = []
    for rank, beam in enumerate(candidates):
        ids = [s.token_id for s in beam.steps]
        ended = "eos" if ids[-1] in eos_ids else "stop" if is_stopped(ids) else ""
        if ended and rank < width:
            finished.append(Hypothesis(beam.group, beam.steps, ended))
        elif not ended:
            live.append(beam)
            if len(live) == width:
                break
    return live


def _advance(batch: LockstepBatch, live: list[_Beam], per_beam: int) -> torch.Tensor:
    """Re-select the parents' rows for the new beams and feed each beam's new token to its rows."""
    batch.select([row for beam in live for row in beam.rows])
    tokens = torch.tensor([beam.steps[-1].token_id for beam in live for _ in range(per_beam)])  # (beams * R,)
    return batch.step(tokens)  # (beams * R, V)
