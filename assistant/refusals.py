"""What greedy decoding refuses to write, whatever the scores: an answer that opens by announcing a value or
whose first sentence only echoes the question (:mod:`assistant.openers`), and an answer that loops
(:mod:`assistant.repeats`).

A refused token gives way to the next choice: the step's own choice (the quote constraint's, or the
argmax) is made again with that token gone from the combined scores and from every row. EOS is never
refused, and after ``MAX_REFUSED`` refusals at one step the choice stands. Beam search
(:func:`refusing_shortlist`) drops refused tokens from each beam's candidate extensions the same way.
"""

from __future__ import annotations

from typing import Callable, Collection, Sequence

import torch

from .config import AnswerConfig
from .decoding import Choose, Shortlist
from .openers import announcing_opener, echoing
from .repeats import looping

# (tokens the answer has before the candidate, the answer's text before it, with it) -> whether it is refused
Refusal = Callable[[int, str, str], bool]
MAX_REFUSED = 16  # tokens refused at one step before the choice stands anyway


def answer_refusals(config: AnswerConfig, question: str) -> list[Refusal]:
    """The refusals ``config`` turns on for an answer to ``question``: ``restate_openers``, ``refuse_echoes``,
    ``loop_words``."""
    out: list[Refusal] = []
    if config.restate_openers:
        out.append(announcing_opener)
    if config.refuse_echoes and question:
        out.append(echoing(question))
    if config.loop_words:
        out.append(looping(config.loop_words))
    return out


def refusing(choose: Choose, decode: Callable[[Sequence[int]], str], eos_ids: Collection[int],
             refusals: Sequence[Refusal]) -> Choose:
    """``choose``, except that a token one of ``refusals`` refuses is replaced by the next choice (module docstring)."""
    if not refusals:
        return choose

    def pick(ids: Sequence[int], scores: torch.Tensor, row_logprobs: torch.Tensor) -> int:
        token = choose(ids, scores, row_logprobs)
        copied, before = False, None
        for _ in range(MAX_REFUSED):
            if token in eos_ids:
                return token
            before = decode(ids) if before is None else before
            text = decode([*ids, token])
            if not any(refused(len(ids), before, text) for refused in refusals):
                return token
            if not copied:  # the caller's tensors stay as they are
                scores, row_logprobs, copied = scores.clone(), row_logprobs.clone(), True
            scores[token] = -torch.inf
            row_logprobs[:, token] = -torch.inf
            token = choose(ids, scores, row_logprobs)
        return token

    return pick


def plain_shortlist(ids: Sequence[int], scores: torch.Tensor, n: int) -> list[tuple[int, float]]:
    """A beam's ``n`` best extensions by its own scores: what beam search takes without a shortlist."""
    top = scores.topk(min(n, scores.shape[-1]))
    return list(zip(top.indices.tolist(), top.values.tolist()))


def refusing_shortlist(shortlist: Shortlist | None, decode: Callable[[Sequence[int]], str], eos_ids: Collection[int],
                       refusals: Sequence[Refusal]) -> Shortlist | None:
    """Beam search's candidates (``shortlist``, or the plain best ones when None) without the tokens one of
    ``refusals`` refuses: up to ``MAX_REFUSED`` are passed over per beam and step, as in :func:`refusing`."""
    if not refusals:
        return shortlist
    ranked_by = shortlist or plain_shortlist

    def top(ids: Sequence[int], scores: torch.Tensor, n: int) -> list[tuple[int, float]]:
        ranked = ranked_by(ids, scores, n + MAX_REFUSED)
        before, kept = decode(ids), []
        for token, value in ranked:
            if token in eos_ids or not any(refused(len(ids), before, decode([*ids, token])) for refused in refusals):
                kept.append((token, value))
                if len(kept) == n:
                    break
        return kept or ranked[:n]  # every candidate refused: they stand

    return top
