"""REALM reader: the answer is a span of a retrieved chunk (Guu et al. 2020).

p(y|x) = Σ_z p(z|x) · p(y|z,x), where p(y|z,x) sums the reader's span probabilities over every
span of z whose text is y; equal answers from different chunks merge by that sum. When the best
answer's p(y|x) is under ``[answer.realm] threshold`` the mode says it could not find the answer
instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Sequence

from knowledge.errors import ConfigError
from knowledge.types import Hit

from ..answer import Answer, AnswerSpan, RankedAnswer, Support, TokenProvenance, chunks_of
from ..config import AnswerConfig
from ..conversation import Turn
from ..generator import Generator
from ..reader import GENERATOR_READER, Reader, Readers
from ..reader.marginal import ChunkSpan, MarginalAnswer, marginalize_spans
from ..support import label_whole
from .base import ModeBase, ModeResources, QuestionSettings, doc_logprior

NO_ANSWER = "I could not find this in your documents."


@dataclass(frozen=True)
class RealmSettings:
    reader: str = GENERATOR_READER  # "generator" (the generator reads each chunk, offline) or an extractive QA model id / path
    threshold: float = 1e-10  # "no answer" when the best answer's p(y|x) is below this (generator reader: p is tiny, 1e-10 from the counterfactual dev sets; QA model: about 0.1)
    max_answer_tokens: int = 16  # longest answer span, in words (generator reader) or model tokens (QA model)
    n_best: int = 5  # answers returned with their marginals
    window_tokens: int = 384  # QA-model reader: question + chunk tokens per window
    stride: int = 128  # QA-model reader: tokens shared by consecutive windows of a long chunk

    moved_from: ClassVar[dict[str, str]] = {
        "realm_reader": "reader", "realm_threshold": "threshold", "realm_max_answer_tokens": "max_answer_tokens",
        "realm_n_best": "n_best", "realm_window_tokens": "window_tokens", "realm_stride": "stride",
    }

    def __post_init__(self) -> None:
        if not self.reader.strip():
            raise ConfigError(f'realm: reader is empty: use "{GENERATOR_READER}" or a question-answering model id or path')
        if not 0 <= self.threshold <= 1:
            raise ConfigError("realm: threshold must be between 0 and 1 (a probability)")
        if self.max_answer_tokens < 1 or self.n_best < 1:
            raise ConfigError("realm: max_answer_tokens and n_best must be >= 1")
        if not 0 <= self.stride < self.window_tokens:
            raise ConfigError("realm: stride must be >= 0 and below window_tokens")


class RealmMode(ModeBase):
    """Extractive answers with exact provenance: the chunks and the character offsets of the span
    in each source document. Every token carries p(y|x) of the whole answer and its posterior
    p(z|x,y) (an extracted span is chosen as a whole, not token by token).

    The reader model (``reader``, a model or a path: never a per-request setting) loads once; a
    question's span and window settings make a reader on top of it."""

    name = "realm"
    concurrent = True
    Settings = RealmSettings
    request_settings = ("threshold", "max_answer_tokens", "n_best", "window_tokens", "stride")

    def __init__(self, generator: Generator, config: AnswerConfig, reader: Reader | None = None,
                 settings: RealmSettings | None = None) -> None:
        super().__init__(generator, config, settings)
        self.fixed_reader = reader  # a reader given by the caller answers every question as it is
        self.readers = None if reader is not None else Readers(self.settings.reader, generator)

    @classmethod
    def create(cls, generator: Generator, config: AnswerConfig, resources: ModeResources) -> "RealmMode":
        return cls(generator, config)

    def reader(self, settings: QuestionSettings) -> Reader:
        if self.fixed_reader is not None:
            return self.fixed_reader
        own = settings.own
        return self.readers.reader(settings.shared, own.max_answer_tokens, own.window_tokens, own.stride)

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Answer:
        settings = settings or self.defaults()
        cfg, own = settings.shared, settings.own
        prior = doc_logprior(hits, cfg)  # (k,)
        ranked = marginalize_spans(self.spans(question, hits, self.reader(settings)), prior)
        n_best = tuple(RankedAnswer(a.text, a.logprob, a.posterior) for a in ranked[: own.n_best])
        best = ranked[0] if ranked else None
        p_best = math.exp(best.logprob) if best else 0.0
        if best is None or p_best < own.threshold:
            tokens = answer_tokens(self.generator.tokenizer, NO_ANSWER, 1.0 - p_best, ())
            tokens = tuple(replace(t, support=Support("model")) for t in tokens)  # the system speaking, not a claim
            return Answer(NO_ANSWER, self.name, chunks_of(hits, prior.exp().tolist(), None), tokens, n_best)
        tokens = answer_tokens(self.generator.tokenizer, best.text, p_best, best.posterior)
        cited = max(range(len(best.posterior)), key=lambda z: best.posterior[z])
        supports = label_whole([t.text for t in tokens], "document", cited, question)  # a span of the chunk
        tokens = tuple(replace(t, support=s) for t, s in zip(tokens, supports))
        chunks = chunks_of(hits, prior.exp().tolist(), best.posterior)
        return Answer(best.text, self.name, chunks, tokens, n_best, document_spans(best, hits))

    @staticmethod
    def spans(question: str, hits: Sequence[Hit], reader: Reader) -> list[ChunkSpan]:
        """Every candidate span of every chunk, checked to be the chunk's text at its offsets."""
        per_chunk = reader.read(question, [h.chunk.text for h in hits])
        if len(per_chunk) != len(hits):
            raise ValueError(f"the reader returned spans for {len(per_chunk)} chunks, not {len(hits)}")
        out = []
        for z, (hit, candidates) in enumerate(zip(hits, per_chunk)):
            for c in candidates:
                if hit.chunk.text[c.start : c.end] != c.text or not c.text:
                    raise ValueError(f"the reader's span {c.start}:{c.end} {c.text!r} is not the text of chunk {hit.chunk.chunk_id}")
                out.append(ChunkSpan(z, c.start, c.end, c.text, c.logprob))
        return out


def document_spans(answer: MarginalAnswer, hits: Sequence[Hit]) -> tuple[AnswerSpan, ...]:
    """The answer's spans with offsets into their source documents (chunk start + offset in chunk)."""
    out = []
    for span, share in answer.spans:
        chunk = hits[span.chunk].chunk
        out.append(AnswerSpan(chunk.chunk_id, chunk.doc_id, chunk.start + span.start, chunk.start + span.end, share, span.text))
    return tuple(out)


def answer_tokens(tokenizer: Any, text: str, prob: float, posterior: Sequence[float]) -> tuple[TokenProvenance, ...]:
    """The text cut at the generator's token boundaries, every piece with the same prob and posterior;
    the pieces concatenate to the text exactly."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        cuts = sorted({start for start, _ in offsets if 0 < start < len(text)})
    except (NotImplementedError, TypeError, KeyError):  # a slow tokenizer has no offsets: one piece
        cuts = []
    bounds = [0, *cuts, len(text)]
    post = tuple(float(p) for p in posterior)
    return tuple(TokenProvenance(text[a:b], float(prob), post) for a, b in zip(bounds, bounds[1:]) if b > a)
