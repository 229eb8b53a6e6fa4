"""Answers that say what they answer: greedy decoding refuses an opener that only announces a value.

"In what year was the writer Aldous Huxley born?" answered "The answer is 1963." picks the value
with nothing in front of it that a small generator can copy from: after "The answer is 1" every
row of the packaged model writes "9" (the death year of the chunk's "(26 July 1889 – 22 November
1963)", or any year of the 1900s), while after "Aldous Huxley was born in 1" the chunk that states
the birth writes "8". An answer that restates what was asked puts the question's words right
before the value, where the model copies the value those words stand next to in the documents;
it also reads as an answer on its own. So the answer may not open with "The answer is",
"The correct answer", "Answer:" (``answer.restate_openers``): at such a step the choice falls
to the best token that does not make one (:mod:`assistant.refusals`; docs/grounding.md, "Answers that say
what they answer").
"""

from __future__ import annotations

import re

# "The answer is", "The correct answer:", "Answer:", "My final answer", with any leading spaces or marks
ANNOUNCING_OPENER = re.compile(
    r"^\W*(?:(?:the|my|our)\s+)?(?:(?:correct|right|final|short|simple|best|exact)\s+)?answers?\b", re.IGNORECASE)
OPENER_TOKENS = 8  # an opener is this many tokens at most: later "answer"s are left alone


def announces(text: str) -> bool:
    """Whether an answer starting with ``text`` opens by announcing its value ("The answer is ...")."""
    return ANNOUNCING_OPENER.match(text) is not None


def announcing_opener(written: int, text: str) -> bool:
    """The refusal of :mod:`assistant.refusals` for ``answer.restate_openers``: within the answer's first
    ``OPENER_TOKENS`` tokens (``written`` before the candidate), ``text`` must not announce a value."""
    return written < OPENER_TOKENS and announces(text)
