"""Support labels: which answer tokens a retrieved chunk explains, and which came from the model.

A token's evidence is its PMI under each chunk against the null document (``grounding.pmi``):
PMI_z(y_i) = log p(y_i | x, z, y_<i) − log p(y_i | x, ∅, y_<i).

Content words are judged within *phrases* (runs of adjacent content words, "Jomo Kenyatta",
"1874"), because the chain rule spreads a copied value's evidence unevenly over its tokens: once
the first digits of "1874" are written, the model alone guesses the rest as well as the chunk
does. A phrase's PMI under chunk z is the sum of its tokens' PMIs, log p(phrase | x, z, prefix) −
log p(phrase | x, ∅, prefix).

A content word is "document" under chunk z when z contains the word verbatim (whole word, any
case) and the chunk did not make its phrase less likely than ``copy_threshold`` allows (it was
quoted, not merely present). Names and numbers (a capital letter or a digit) need that verbatim
evidence: measured on the counterfactual dev set, a chunk that holds "1859" raises the digits of a
garbled "1959" as much as those of the right year, so PMI alone would colour a hallucinated year
like a quoted one. Other content words (paraphrases, inflections) may instead pass on PMI alone,
``threshold`` nats. A word the answer repeats is the chunk's again when its first mention was
labelled with a chunk that contains it (the closed-book row has read the first mention too, so the
chunk no longer raises the second). Tokens outside content words (function words, punctuation, words of the
question) are judged on their own PMI.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .answer import Support, TokenProvenance

WORD = re.compile(r"\w+(?:[.,'’]\w+)*")  # "1,874" and "U.S" are one word; hyphens join two
# Function words: never "content", whatever their label (English; answers are in the question's language).
FUNCTION_WORDS = frozenset("""
a an the and or but nor so yet if then than that this these those there here it its it's is are was were be been
being am do does did done has have had having of in on at by for from to into onto upon with within without
about above below after before during since until till via per as not no yes i you he she we they me him her us
them my your his our their who whom whose which what when where why how also too very just only both either
neither each every all any some such same other another more most less least many much few one ones can could
shall should will would may might must s t
""".split())


@dataclass(frozen=True)
class SupportRule:
    """The labelling rule (see the module docstring): PMI ``threshold`` for content words that are
    not names or numbers and for other tokens; ``copy_threshold``, the least phrase PMI of a word
    the chunk contains verbatim."""

    threshold: float = math.log(4.0)
    copy_threshold: float = -1.0


@dataclass(frozen=True)
class _Word:
    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class _Phrase:
    tokens: tuple[int, ...]
    text: str
    start: int  # character offsets in the answer text
    end: int
    words: tuple[_Word, ...] = ()


def label_support(
    texts: Sequence[str],
    pmis: Sequence[Sequence[float]],
    closed_book: Sequence[float | None],
    chunk_texts: Sequence[str],
    question: str,
    rule: SupportRule = SupportRule(),
) -> list[Support]:
    """One :class:`Support` per answer token.

    texts: the n token texts (they concatenate to the answer); pmis: (n, k) PMI_z(y_i) in nats,
    −inf or NaN where chunk z gives no evidence; closed_book: p(y_i | x, ∅, y_<i) per token;
    chunk_texts: the k chunks' texts (for copy evidence).
    """
    n = len(texts)
    if len(pmis) != n or len(closed_book) != n:
        raise ValueError(f"{n} tokens but {len(pmis)} PMI rows and {len(closed_book)} closed-book probabilities")
    asked = {w.lower() for w in WORD.findall(question)}
    chunks = [_normalise(t) for t in chunk_texts]
    judged: dict[int, tuple[str, int | None]] = {}
    quoted: dict[str, int] = {}  # a word already labelled "document" → its chunk
    for phrase in content_phrases(texts, asked):
        phrase_pmi = [sum(_as_float(pmis[i][z]) for i in phrase.tokens) for z in range(len(chunks))]
        for word in phrase.words:
            verdict = _judge_word(word.text, phrase_pmi, chunks, rule)
            verdict = _repeat_of_quoted(word.text, verdict, quoted, chunks)
            for i in word.tokens:
                judged.setdefault(i, verdict)
    out = []
    for i in range(n):
        content = i in judged
        label, chunk = judged[i] if content else _judge_token(pmis[i], rule)
        out.append(Support(label, chunk, tuple(_finite_or_none(v) for v in pmis[i]), closed_book[i], content))
    return out


def content_phrases(texts: Sequence[str], asked: set[str] = frozenset()) -> list[_Phrase]:  # type: ignore[assignment]
    """Runs of adjacent content words (separated by whitespace only), with the tokens they touch."""
    text = "".join(texts)
    bounds, pos = [], 0
    for t in texts:
        bounds.append((pos, pos + len(t)))
        pos += len(t)
    words = [m for m in WORD.finditer(text) if _is_content(m.group(), asked)]
    runs: list[list[re.Match[str]]] = []
    for m in words:
        gap = text[runs[-1][-1].end() : m.start()] if runs else ""
        if gap.isspace():  # only whitespace since the previous content word: the same phrase
            runs[-1].append(m)
        else:
            runs.append([m])
    phrases = []
    for run in runs:
        start, end = run[0].start(), run[-1].end()
        words = tuple(_Word(m.group(), _touching(bounds, texts, m.start(), m.end())) for m in run)
        phrases.append(_Phrase(_touching(bounds, texts, start, end), text[start:end], start, end, words))
    return phrases


def _touching(bounds: Sequence[tuple[int, int]], texts: Sequence[str], start: int, end: int) -> tuple[int, ...]:
    """The non-blank tokens overlapping characters start:end."""
    return tuple(i for i, (a, b) in enumerate(bounds) if a < end and b > start and texts[i].strip())


def label_whole(texts: Sequence[str], label: str, chunk: int | None, question: str) -> list[Support]:
    """Every token with the same label (an extractive span is "document" as a whole; a message
    from the system is "model"), content flags from the phrases."""
    asked = {w.lower() for w in WORD.findall(question)}
    content = {i for p in content_phrases(texts, asked) for i in p.tokens}
    return [Support(label, chunk if label == "document" else None, (), None, i in content) for i in range(len(texts))]


def label_by_share(texts: Sequence[str], shares: Sequence[float], chunks: Sequence[int | None], question: str,
                   threshold: float = 0.5) -> list[Support]:
    """kNN-LM: a token is "document" when the datastore's share λ·p_kNN(w)/p(w) of its
    probability reaches ``threshold`` (``chunks``: its nearest neighbour's chunk index or None)."""
    asked = {w.lower() for w in WORD.findall(question)}
    content = {i for p in content_phrases(texts, asked) for i in p.tokens}
    out = []
    for i, (share, chunk) in enumerate(zip(shares, chunks)):
        label = "document" if share >= threshold else "model"
        out.append(Support(label, chunk if label == "document" else None, (), None, i in content))
    return out


Labeller = Callable[[Sequence[str], Sequence[Any]], list[Support]]


class SupportStream:
    """Support labels while an answer streams: :meth:`push` each token (its text and its evidence)
    as it is final and get back the tokens whose labels can no longer change (a phrase may still
    grow by the next word, so its tokens wait for it); :meth:`finish` releases the rest. Released
    labels equal ``label`` on the whole answer.

    ``label(texts, evidence)``: the labelling of the whole answer so far, e.g. :func:`pmi_labeller`."""

    def __init__(self, label: Labeller, question: str) -> None:
        self.label = label
        self.asked = {w.lower() for w in WORD.findall(question)}
        self.texts: list[str] = []
        self.evidence: list[Any] = []
        self.released = 0

    def push(self, text: str, evidence: Any) -> list[tuple[int, Support]]:
        self.texts.append(text)
        self.evidence.append(evidence)
        return self._release(self._final_count())

    def finish(self) -> list[tuple[int, Support]]:
        return self._release(len(self.texts))

    def _release(self, upto: int) -> list[tuple[int, Support]]:
        if upto <= self.released:
            return []
        labels = self.label(self.texts, self.evidence)
        out = [(i, labels[i]) for i in range(self.released, upto)]
        self.released = upto
        return out

    def _final_count(self) -> int:
        """How many leading tokens lie wholly before the first character whose label may change."""
        text = "".join(self.texts)
        open_start = _open_start(text, content_phrases(self.texts, self.asked), self.asked)
        count, pos = 0, 0
        for t in self.texts:
            pos += len(t)
            if pos > open_start:
                break
            count += 1
        return count


def pmi_labeller(chunk_texts: Sequence[str], question: str, rule: SupportRule = SupportRule()) -> Labeller:
    """Labels from (PMI row, closed-book probability) evidence per token: :func:`label_support`."""
    chunks = list(chunk_texts)

    def label(texts: Sequence[str], evidence: Sequence[Any]) -> list[Support]:
        return label_support(texts, [e[0] for e in evidence], [e[1] for e in evidence], chunks, question, rule)

    return label


def share_labeller(question: str, threshold: float = 0.5) -> Labeller:
    """Labels from (datastore share, nearest chunk index) evidence per token: :func:`label_by_share`."""

    def label(texts: Sequence[str], evidence: Sequence[Any]) -> list[Support]:
        return label_by_share(texts, [e[0] for e in evidence], [e[1] for e in evidence], question, threshold)

    return label


def _open_start(text: str, phrases: Sequence[_Phrase], asked: set[str]) -> int:
    """The first character of the answer so far whose support label may still change: the last
    word while it may grow (and the phrase it may join), or the last phrase while the next word
    may join it."""
    last = None
    for last in WORD.finditer(text):
        pass
    if last is None:
        return len(text)
    tail = text[last.end() :]
    if tail == "" or (len(tail) == 1 and tail in ".,'’"):  # the last word may still grow
        joined = next((p for p in phrases if p.start <= last.start() < p.end), None)
        joined = joined or next((p for p in phrases if p.end <= last.start() and text[p.end : last.start()].isspace()), None)
        return joined.start if joined is not None else last.start()
    if tail.isspace() and _is_content(last.group(), asked):  # the next word may join its phrase
        return next((p.start for p in phrases if p.start <= last.start() < p.end), last.start())
    return len(text)


def _is_content(word: str, asked: set[str]) -> bool:
    low = word.lower()
    return low not in FUNCTION_WORDS and low not in asked


def _judge_word(word: str, phrase_pmi: Sequence[float], chunks: Sequence[str], rule: SupportRule) -> tuple[str, int | None]:
    """("document", z) for the chunk with the strongest qualifying evidence, else ("model", None)."""
    exact = any(ch.isdigit() or ch.isupper() for ch in word)  # a name or a number: quoted or nothing
    best, best_score = None, -math.inf
    for z, chunk in enumerate(chunks):
        score = phrase_pmi[z]
        quoted = score >= rule.copy_threshold and _contains(chunk, word)
        if (quoted or (not exact and score >= rule.threshold)) and score > best_score:
            best, best_score = z, score
    return ("document", best) if best is not None else ("model", None)


def _repeat_of_quoted(word: str, verdict: tuple[str, int | None], quoted: dict[str, int],
                      chunks: Sequence[str]) -> tuple[str, int | None]:
    """A word the answer already wrote as a quote of chunk z is that chunk's again when z contains
    it: the second "2004" of an answer follows the first, so the chunk cannot raise it above the
    closed-book row (which has read the first one too). Records the words labelled "document"."""
    key = word.lower()
    if verdict[0] == "model" and key in quoted and _contains(chunks[quoted[key]], word):
        verdict = ("document", quoted[key])
    if verdict[0] == "document" and verdict[1] is not None:
        quoted.setdefault(key, verdict[1])
    return verdict


def _judge_token(pmi_row: Sequence[float], rule: SupportRule) -> tuple[str, int | None]:
    scores = [_as_float(v) for v in pmi_row]
    z = max(range(len(scores)), key=scores.__getitem__, default=None)
    return ("document", z) if z is not None and scores[z] >= rule.threshold else ("model", None)


def _contains(normalised_chunk: str, phrase: str) -> bool:
    target = _normalise(phrase)
    return bool(target) and re.search(rf"(?<!\w){re.escape(target)}(?!\w)", normalised_chunk) is not None


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _as_float(v: float | None) -> float:
    return -math.inf if v is None or v != v else float(v)


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def content_word_labels(tokens: Sequence[TokenProvenance]) -> list[str]:
    """The support label of each content word of an answer (a run of content tokens with no
    whitespace between them counts once): the basis of "k of n content words supported"."""
    labels: list[str] = []
    previous_content = False
    for t in tokens:
        s = t.support
        content = s is not None and s.content and bool(t.text.strip())
        if content and (not previous_content or t.text[:1].isspace()):
            labels.append(s.label)  # type: ignore[union-attr]
        elif content and s.label == "model":  # type: ignore[union-attr]
            labels[-1] = "model"  # a word is supported only if all of it is
        previous_content = content
    return labels
