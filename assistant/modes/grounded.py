"""Glue shared by the modes that decode with the null document: per-step evidence to tokens with
their support labels, released in order as the labels become final."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from knowledge.types import Hit

from ..answer import TokenProvenance
from ..config import AnswerConfig
from ..focus import focus_sentences
from ..generator import Generator
from ..quotes import Quotable
from ..support import SupportRule, SupportStream, pmi_labeller


@dataclass(frozen=True)
class StepEvidence:
    """One answer token before its label: text, probability, posterior over the chunks, PMI per
    chunk (nats) and the closed-book probability p(y_i|x,∅,y_<i)."""

    text: str
    prob: float
    posterior: tuple[float, ...]
    pmi: Sequence[float]
    closed_book: float | None


def support_rule(config: AnswerConfig) -> SupportRule:
    return SupportRule(config.support_threshold, config.support_copy_threshold)


def support_stream(hits: Sequence[Hit], question: str, config: AnswerConfig) -> SupportStream:
    return SupportStream(pmi_labeller([h.chunk.text for h in hits], question, support_rule(config)), question)


def quotable_of(generator: Generator, hits: Sequence[Hit], question: str, config: AnswerConfig) -> Quotable | None:
    """The names and numbers an answer may state when ``quote_penalty`` is on: those of the texts the
    support labels count as quotes (the chunks and the question), so a quoted word is "document";
    with ``quote_focus_penalty``, the sentences the question points to and the question as its focus."""
    if config.quote_penalty <= 0:
        return None
    texts = [h.chunk.text for h in hits]
    focused = focus_sentences(question, texts, config.quote_focus_ratio) if config.quote_focus_penalty > 0 else []
    # no sentence shares a word with the question: no focus, rather than one that would penalise every quoted name
    focus = Quotable(focused + [question], generator.common_words) if focused else None
    return Quotable(texts + [question], generator.common_words, focus, question, focused)


def with_support(evidence: Iterable[StepEvidence], labels: SupportStream) -> Iterator[TokenProvenance]:
    """Each token with its support label, as soon as the label is final."""
    pending: list[StepEvidence] = []

    def release(ready: list) -> Iterator[TokenProvenance]:
        for i, support in ready:
            e = pending[i]
            yield TokenProvenance(e.text, e.prob, e.posterior, support=support)

    for e in evidence:
        pending.append(e)
        yield from release(labels.push(e.text, (list(e.pmi), e.closed_book)))
    yield from release(labels.finish())

