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
from typing import Callable

from .focus import content_words, stems_match

# "The answer is", "The correct answer:", "Answer:", "My final answer", "The most relevant answer is" (up to three
# words between "the" and "answer": concat's answers open so, from the prompts' "Most relevant:"), with any leading
# spaces or marks
ANNOUNCING_OPENER = re.compile(
    r"^\W*(?:(?:the|my|our)\s+(?:[\w-]+\s+){0,3}|(?:correct|right|final|short|simple|best|exact)\s+)?answers?\b",
    re.IGNORECASE)
OPENER_TOKENS = 8  # an opener is this many tokens at most: later "answer"s are left alone


def announces(text: str) -> bool:
    """Whether an answer starting with ``text`` opens by announcing its value ("The answer is ...")."""
    return ANNOUNCING_OPENER.match(text) is not None


def announcing_opener(written: int, before: str, text: str) -> bool:
    """The refusal of :mod:`assistant.refusals` for ``answer.restate_openers``: within the answer's first
    ``OPENER_TOKENS`` tokens (``written`` before the candidate), ``text`` must not announce a value."""
    return written < OPENER_TOKENS and announces(text)


# the end of a sentence: ".", "!" or "?" before a space or the end, or a line break not after a ":" (a list's
# lead-in); a number alone at the start of a line ("1. Polonium") is a list's item, not a sentence
SENTENCE_END = re.compile(r"(?<!^\d)(?<!\n\d)(?<!^\d\d)(?<!\n\d\d)[.!?]+(?=\s|$)|(?<!:)\n")


WORDLESS = re.compile(r"\W*")


def first_sentence(text: str) -> str | None:
    """``text`` up to the end of its first sentence, or None while that sentence goes on."""
    text = text.lstrip()
    end = SENTENCE_END.search(text)
    return None if end is None else text[:end.start()]


def adds_nothing(question: str, sentence: str) -> bool:
    """Whether ``sentence`` has no content word (:func:`assistant.focus.content_words`) that ``question`` lacks:
    "The mother of the Greek hero Achilles is the mother of the Greek hero Achilles." for "Who was the mother of
    the Greek hero Achilles?" (words sharing a stem count as the question's: "discovered" for "discover")."""
    asked = content_words(question)
    return not any(not any(stems_match(word, own) for own in asked) for word in content_words(sentence))


def echoing(question: str) -> Callable[[int, str, str], bool]:
    """The refusal of :mod:`assistant.refusals` for ``answer.refuse_echoes``: the token that ends the answer's
    first sentence is refused while that sentence has words and only echoes ``question`` (:func:`adds_nothing`), so the
    answer goes on to say something ("... Achilles is Eurynome") instead of stopping there or asking back."""

    def refused(written: int, before: str, text: str) -> bool:
        if first_sentence(before) is not None:
            return False  # only the first sentence, and only where it ends
        sentence = first_sentence(text)  # one without a word (".. cmdoption::" of reST markup) echoes nothing
        return sentence is not None and WORDLESS.fullmatch(sentence) is None and adds_nothing(question, sentence)

    return refused
