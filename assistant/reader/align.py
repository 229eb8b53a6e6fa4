"""Aligning a free-text answer to the spans of a chunk that say the same thing.

A small generator answers in sentences that repeat the question ("The default encoding of open()
is UTF-8."). The words of the question are not the answer, so they are dropped from the generated
answer first (on real factoid questions with the gold document given, this raised exact match
of the aligned span from about 0.02 to 0.49); then every span of the chunk that starts and ends
on one of the remaining words is scored by token F1 against them, as SQuAD scores answers.
Function words count in neither precision nor recall, so a span never grows to take them in.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from knowledge.text_tokens import STOPWORDS_EN, s_stem

WORD = re.compile(r"\w+")
# a sentence end, a line break, or a clause that adds to what was said ("..., which is still sold today")
BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+|;\s*|,\s+(?=(?:which|who|whose|where|while|and|but|so)\b)")
# Words that carry no answer: the Lucene stopwords plus the frame of a typical reply.
FILLER = STOPWORDS_EN | frozenset(
    "i you your we he she him her his hers they them our can could should would may might do does did "
    "has have had its which what who whom "
    "whose when where why how called named known answer context question yes".split()
)


@dataclass(frozen=True)
class AlignedSpan:
    """Characters ``start:end`` of the chunk; ``f1`` against the answer's content words."""

    start: int
    end: int
    f1: float


def word_key(word: str) -> str:
    """How two words are compared: lower case, plural and verb endings dropped, so that ``Types``
    = ``type`` and ``used`` = ``use`` = ``uses``."""
    key = s_stem(word.lower())
    for suffix in ("ing", "ed"):
        if key.endswith(suffix) and len(key) - len(suffix) >= 2:
            key = key[: -len(suffix)]
            break
    return key[:-1] if key.endswith("e") and len(key) >= 3 else key


def answer_words(answer: str, question: str) -> Counter[str]:
    """The content words of the answer that are not words of the question; if that leaves nothing,
    the answer's content words; if none, all its words."""
    asked = {word_key(w) for w in WORD.findall(question)}
    words = [w.lower() for w in WORD.findall(answer)]
    content = [word_key(w) for w in words if w not in FILLER]
    for choice in ([w for w in content if w not in asked], content, [word_key(w) for w in words]):
        if choice:
            return Counter(choice)
    return Counter()


def statements(answer: str) -> list[tuple[str, bool]]:
    """The answer cut into sentences, lines and clauses, each with whether its end was reached."""
    out, start = [], 0
    for m in BOUNDARY.finditer(answer):
        out.append((answer[start : m.start()], True))
        start = m.end()
    if start < len(answer):
        out.append((answer[start:], False))
    return out


def first_statement(answer: str, question: str) -> tuple[str, bool] | None:
    """The first sentence (line, clause) of the answer that has a content word the question lacks, and
    whether it is complete: a small generator states the answer there and then rambles on."""
    asked = {word_key(w) for w in WORD.findall(question)}
    for piece, complete in statements(answer):
        if any(word_key(w) not in asked for w in WORD.findall(piece) if w.lower() not in FILLER):
            return piece, complete
    return None


def aligned_spans(answer: str, question: str, text: str, max_words: int, n: int) -> list[AlignedSpan]:
    """The spans of ``text`` (at most ``max_words`` words) that best match the words of the answer's
    first statement that are not in the question, by token F1: the ``n`` best, ties to the shorter
    span, then the earlier one. A span then takes in the capitalised neighbours that the statement
    has next to it, question words included, to complete a name ("Python" of "the Python Software
    Foundation")."""
    found = first_statement(answer, question)
    statement = found[0] if found else answer
    target = answer_words(statement, question)
    if not target:
        return []
    words = [_Word(m.start(), m.end(), word_key(m.group()), m.group().lower() in FILLER, m.group()[0].isupper())
             for m in WORD.finditer(text)]
    pairs = _adjacent_pairs(statement)
    out: list[AlignedSpan] = []
    for f1, first, last in _best_by_f1(words, target, max_words, n):
        first, last = _extended(words, first, last, pairs, max_words)
        if all((s.start, s.end) != (words[first].start, words[last].end) for s in out):
            out.append(AlignedSpan(words[first].start, words[last].end, f1))
    return out


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    key: str
    filler: bool
    capital: bool


def _best_by_f1(words: list[_Word], target: Counter[str], max_words: int, n: int) -> list[tuple[float, int, int]]:
    """(f1, first word, last word) of the n best spans; a best span starts and ends on a target word."""
    total = sum(target.values())
    scored: list[tuple[float, int, int, int]] = []  # (-f1, length, first, last)
    for first, word in enumerate(words):
        if word.key not in target:
            continue
        seen: Counter[str] = Counter()
        common = content = 0
        for last in range(first, min(first + max_words, len(words))):
            key = words[last].key
            if words[last].filler and key not in target:
                continue
            content += 1
            seen[key] += 1
            if seen[key] <= target[key]:
                common += 1
            if key in target:
                scored.append((-2 * common / (content + total), last - first, first, last))
    scored.sort()
    return [(-neg, first, last) for neg, _, first, last in scored[:n]]


def _adjacent_pairs(statement: str) -> set[tuple[str, str]]:
    keys = [word_key(w) for w in WORD.findall(statement)]
    return set(zip(keys, keys[1:]))


def _extended(words: list[_Word], first: int, last: int, pairs: set[tuple[str, str]], max_words: int) -> tuple[int, int]:
    """Grow the span over capitalised words that stand next to it in the statement as in the text."""
    while first > 0 and last - first + 1 < max_words and words[first - 1].capital and not words[first - 1].filler \
            and (words[first - 1].key, words[first].key) in pairs:
        first -= 1
    while last + 1 < len(words) and last - first + 1 < max_words and words[last + 1].capital and not words[last + 1].filler \
            and (words[last].key, words[last + 1].key) in pairs:
        last += 1
    return first, last
