"""Answers that say what they answer: greedy decoding refuses an opener that only announces a value.

"In what year was the writer Aldous Huxley born?" answered "The answer is 1963." picks the value
with nothing in front of it that a small generator can copy from: after "The answer is 1" every
row of the packaged model writes "9" (the death year of the chunk's "(26 July 1889 – 22 November
1963)", or any year of the 1900s), while after "Aldous Huxley was born in 1" the chunk that states
the birth writes "8". An answer that restates what was asked puts the question's words right
before the value, where the model copies the value those words stand next to in the documents;
it also reads as an answer on its own. So the answer may not open with "The answer is",
"The correct answer", "Answer:" (``answer.restate_openers``): at such a step the choice falls
to the best token that does not make one (docs/grounding.md, "Answers that say what they answer").
"""

from __future__ import annotations

import re
from typing import Callable, Collection, Sequence

import torch

from .decoding import Choose

# "The answer is", "The correct answer:", "Answer:", "My final answer", with any leading spaces or marks
ANNOUNCING_OPENER = re.compile(
    r"^\W*(?:(?:the|my|our)\s+)?(?:(?:correct|right|final|short|simple|best|exact)\s+)?answers?\b", re.IGNORECASE)
OPENER_TOKENS = 8  # an opener is this many tokens at most: later "answer"s are left alone
MAX_REFUSED = 16  # tokens refused at one step before the choice stands anyway


def announces(text: str) -> bool:
    """Whether an answer starting with ``text`` opens by announcing its value ("The answer is ...")."""
    return ANNOUNCING_OPENER.match(text) is not None


def restating(choose: Choose, decode: Callable[[Sequence[int]], str], eos_ids: Collection[int]) -> Choose:
    """``choose``, except that within the first ``OPENER_TOKENS`` tokens a token whose text makes the
    answer open by announcing its value (:func:`announces`) is refused: ``choose`` picks again with that
    token removed from the combined scores and from every row (up to ``MAX_REFUSED`` times)."""

    def pick(ids: Sequence[int], scores: torch.Tensor, row_logprobs: torch.Tensor) -> int:
        token = choose(ids, scores, row_logprobs)
        if len(ids) >= OPENER_TOKENS:
            return token
        copied = False
        for _ in range(MAX_REFUSED):
            if token in eos_ids or not announces(decode([*ids, token])):
                return token
            if not copied:  # the caller's tensors stay as they are
                scores, row_logprobs, copied = scores.clone(), row_logprobs.clone(), True
            scores[token] = -torch.inf
            row_logprobs[:, token] = -torch.inf
            token = choose(ids, scores, row_logprobs)
        return token

    return pick
