"""The sentences of the retrieved chunks that a question points to.

"In which city was Albert Einstein born?" names Einstein, who is in most sentences of his article,
and "born" and "city", which are in few: the sentence holding the answer is the one sharing the
question's rarest words. Each sentence of the chunks scores the sum, over the question's content
words it contains, of their inverse sentence frequency among those chunks,
idf(t) = log((N + 1) / (n_t + 0.5)) for N sentences, n_t of which contain t;
the focus is every sentence scoring at least ``ratio`` of the best. A question asking for a number
("In what year ...", "How many ...") points only to sentences with a digit, when any of them shares
a word with it.

The prompts restate it (``answer.context_focus``, :func:`assistant.prompts.chunk_contexts`): each
chunk's prompt ends with its own focus sentences, next to the question, where a small generator
copies from. The quote constraint (:mod:`assistant.quotes`) uses it as a second tier: a name or a
number of the chunks that is not in the focus (nor in the question) costs ``quote_focus_penalty``
nats, so that after "19" the answer writes the year of the sentence about the birth, not the
article's other years that the model's memory happens to prefer.

Words match when they share a stem (``stems_match``: "die" ~ "died", "assassinated" ~
"assassination"): a crude stemmer, enough for an English question.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

from .quotes import RUN
from .support import FUNCTION_WORDS

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“‘'(\[])|\n+")
SHORT_WORD = 5  # words up to this long match only as a whole prefix of the other
STEM_SLACK = 3  # longer words match when they agree on all but their last 3 letters (and on 5 at least)
# what a question asks for, rarely in the sentence that answers it ("In what year was ..." / "... was born in 1876")
QUESTION_WORDS = frozenset("what which who whom whose when where why how name named called year date".split())
# a question asking for a number ("In what year ...", "How many ...") is answered by a sentence with a digit in it
ASKS_NUMBER = re.compile(r"\b(?:years?|when|dates?|how (?:many|much|long|old|far|tall|big|large|high)|percent(?:age)?|"
                         r"population|number)\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after . ! ? before a capital letter, a quote or a bracket ("A.D. 1302"
    stays whole), and at line breaks."""
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def content_words(text: str) -> list[str]:
    """The lowercase words of ``text`` that are neither function words nor question words, in order, once each."""
    seen: dict[str, None] = {}
    for run in RUN.findall(text.lower()):
        if run not in FUNCTION_WORDS and run not in QUESTION_WORDS:
            seen.setdefault(run, None)
    return list(seen)


def stems_match(a: str, b: str) -> bool:
    """Whether two words share a stem: they are equal, or the shorter (3 letters at least) is a prefix of the other
    ("die" ~ "died"), or, longer than ``SHORT_WORD``, agrees with it on all but its last
    ``STEM_SLACK`` letters ("assassinated" ~ "assassination")."""
    if a == b:
        return True  # "8" of "Apollo 8"
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) < 3:
        return False
    need = len(short) if len(short) <= SHORT_WORD else max(SHORT_WORD, len(short) - STEM_SLACK)
    return short[:need] == long[:need]


def sentence_scores(terms: Sequence[str], candidates: Sequence[str]) -> list[float]:
    """Each candidate sentence's score: Σ idf(t) over the ``terms`` it contains (module docstring)."""
    words = [set(RUN.findall(s.lower())) for s in candidates]
    holds = [[any(stems_match(t, w) for w in ws) for ws in words] for t in terms]  # (terms, sentences)
    n = len(candidates)
    idf = [math.log((n + 1) / (sum(row) + 0.5)) for row in holds]
    return [sum(idf[i] for i, row in enumerate(holds) if row[j]) for j in range(n)]


def focus_sentences(question: str, texts: Iterable[str], ratio: float = 1.0) -> list[str]:
    """The sentences of ``texts`` scoring at least ``ratio`` × the best score for ``question``
    (none when no sentence shares a content word with it)."""
    return [s for own in focus_by_text(question, list(texts), ratio) for s in own]


def focus_by_text(question: str, texts: Sequence[str], ratio: float = 1.0) -> list[list[str]]:
    """Each text's sentences in the focus of ``question`` over all ``texts`` (:func:`focus_sentences`), in order."""
    split = [sentences(t) for t in texts]
    scores = iter(question_scores(question, split))
    scored = [[(s, next(scores)) for s in own] for own in split]
    best = max((score for own in scored for _, score in own), default=0.0)
    return [[s for s, score in own if best > 0 and score >= ratio * best] for own in scored]


def question_scores(question: str, split: Sequence[Sequence[str]]) -> list[float]:
    """The score of every sentence of the texts (``split``: each text's sentences) for ``question``, in order: the
    idf sum; for a question asking for a number, 0 for a sentence without a digit, as long as one with a digit
    shares a word with the question."""
    candidates = [s for own in split for s in own]
    terms = content_words(question)
    if not candidates or not terms:
        return [0.0] * len(candidates)
    scores = sentence_scores(terms, candidates)
    if ASKS_NUMBER.search(question) and any(score > 0 and _has_digit(s) for s, score in zip(candidates, scores)):
        return [score if _has_digit(s) else 0.0 for s, score in zip(candidates, scores)]
    return scores


def _has_digit(sentence: str) -> bool:
    return any(c.isdigit() for c in sentence)
