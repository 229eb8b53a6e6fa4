"""Answers that do not loop: a token that begins a fourth copy in a row of a run of words is refused.

The packaged generator sometimes falls into a loop once it has said what it had to say ("... born in
22 February 1788 in Austrian, Austrian, Austrian, ...", "in the city of Claros, in the Peloponnese, in
the city of Claros, in the Peloponnese, ...") and writes it until the length limit. With
``answer.loop_words`` = n, the answer may not begin a fourth copy in a row of a run of at most n words:
the token that would (its first word, or the beginning of it) gives way to the model's next choice,
usually the end of the sentence or something new to say.

Only loops: a value stated again later in the answer ("... was in 2004, and the latest version ... was
in 2004") is left alone, and so are up to three copies in a row: a model that stutters ("inspired by the
view of the view of the view that inspired ... Pikes Peak") often goes on to say what it meant, and
refusing its third copy lost that answer on the test split ("... of a woman in the sky"). Refusing every repeated
n-gram instead (the "no repeat n-gram" rule of sequence generation, over 4 words) made the answers
state other values where they restated theirs ("is now in 2008", measured on dev).
"""

from __future__ import annotations

from typing import Callable

from .quotes import RUN


COPIES = 4  # the copy in a row that is refused: three are allowed


def loops(text: str, longest: int) -> bool:
    """Whether ``text`` ends by beginning a fourth copy in a row (``COPIES``) of a run of at most ``longest`` words
    (letters and digits, case-insensitive): its last 3·L + 1 words repeat with period L for some L <= ``longest``;
    where ``text`` ends inside a word, its last word need only begin the word it repeats."""
    words = RUN.findall(text.lower())
    if not words:
        return False
    unfinished = text[-1].isalnum()
    for period in range(1, longest + 1):
        span = (COPIES - 1) * period + 1
        if len(words) < span:
            break
        tail = words[len(words) - span:]
        last, repeated = tail[-1], tail[-1 - period]
        if not (last == repeated or unfinished and repeated.startswith(last)):
            continue
        if all(tail[i] == tail[i + period] for i in range(len(tail) - period - 1)):
            return True
    return False


def looping(longest: int) -> Callable[[int, str, str], bool]:
    """The refusal of :mod:`assistant.refusals` for ``answer.loop_words`` = ``longest``: :func:`loops`."""

    def refused(written: int, before: str, text: str) -> bool:
        return loops(text, longest)

    return refused
