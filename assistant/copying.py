"""Copying from the focus: where the answer so far ends with words of a sentence the question points
to (assistant/focus.py), the word that follows them in that sentence is the copy candidate.

"Albert Einstein was born in" ends with "born in" of the focus sentence "Einstein was born in
Augsburg, ..."; the candidate is " Augsburg". A small generator that restates the question often
has the document's value one step away and writes its memory's instead; ``answer.copy_bonus``
raises the first token of each candidate by that many nats (a pointer, as in copy-aware decoding).

The match is case-insensitive, starts at a word start of the answer and of the sentence, is at
least ``min_chars`` characters long and is the longest such suffix of the answer; every sentence
holding it gives its continuation.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

WORD_START = re.compile(r"(?<!\w)\w")


def copy_continuations(before: str, sentences: Sequence[str], min_chars: int) -> list[str]:
    """The text after the longest suffix of ``before`` that a sentence holds (see the module docstring)."""
    low = before.lower()
    lowered = [s.lower() for s in sentences]
    for start in (m.start() for m in WORD_START.finditer(low)):  # longest suffix first
        suffix = low[start:]
        if len(suffix) < min_chars:
            return []
        out = []
        for sentence, text in zip(sentences, lowered):
            for m in re.finditer(re.escape(suffix), text):
                if m.start() == 0 or not text[m.start() - 1].isalnum():
                    if m.end() < len(text):
                        out.append(sentence[m.end():])
        if out:
            return out
    return []


def copy_token_ids(continuations: Sequence[str], encode: Callable[[str], list[int]]) -> list[int]:
    """The first token of each continuation as the tokenizer writes it alone (a word's leading space included)."""
    ids: dict[int, None] = {}
    for c in continuations:
        first = encode(c[:32])
        if first:
            ids.setdefault(first[0], None)
    return list(ids)
