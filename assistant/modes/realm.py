"""REALM reader: the answer is a span of a retrieved chunk (Guu et al. 2020).

p(y|x) = Σ_z p(z|x) · p(y|z,x), where p(y|z,x) sums the reader's span probabilities over every
span of z whose text is y; equal answers from different chunks merge by that sum. When the best
answer's p(y|x) is under ``answer.realm_threshold`` the mode says it could not find the answer
instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

from knowledge.types import Hit

from ..answer import Answer, AnswerSpan, RankedAnswer, Support, TokenProvenance, chunks_of
from ..config import AnswerConfig
from ..conversation import Turn
from ..generator import Generator
from ..reader import Reader, load_reader
from ..reader.marginal import ChunkSpan, MarginalAnswer, marginalize_spans
from ..support import label_whole
from .base import ModeBase, ModeResources, doc_logprior

NO_ANSWER = "I could not find this in your documents."


class RealmMode(ModeBase):
    """Extractive answers with exact provenance: the chunks and the character offsets of the span
    in each source document. Every token carries p(y|x) of the whole answer and its posterior
    p(z|x,y) (an extracted span is chosen as a whole, not token by token)."""

    name = "realm"

    def __init__(self, generator: Generator, config: AnswerConfig, reader: Reader | None = None) -> None:
        super().__init__(generator, config)
        self.reader = reader if reader is not None else load_reader(config, generator)

    @classmethod
    def create(cls, generator: Generator, config: AnswerConfig, resources: ModeResources) -> "RealmMode":
        return cls(generator, config)

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Answer:
        cfg = self.config
        prior = doc_logprior(hits, cfg)  # (k,)
        ranked = marginalize_spans(self.spans(question, hits), prior)
        n_best = tuple(RankedAnswer(a.text, a.logprob, a.posterior) for a in ranked[: cfg.realm_n_best])
        best = ranked[0] if ranked else None
        p_best = math.exp(best.logprob) if best else 0.0
        if best is None or p_best < cfg.realm_threshold:
            tokens = answer_tokens(self.generator.tokenizer, NO_ANSWER, 1.0 - p_best, ())
            tokens = tuple(replace(t, support=Support("model")) for t in tokens)  # the system speaking, not a claim
            return Answer(NO_ANSWER, self.name, chunks_of(hits, prior.exp().tolist(), None), tokens, n_best)
        tokens = answer_tokens(self.generator.tokenizer, best.text, p_best, best.posterior)
        cited = max(range(len(best.posterior)), key=lambda z: best.posterior[z])
        supports = label_whole([t.text for t in tokens], "document", cited, question)  # a span of the chunk
        tokens = tuple(replace(t, support=s) for t, s in zip(tokens, supports))
        chunks = chunks_of(hits, prior.exp().tolist(), best.posterior)
        return Answer(best.text, self.name, chunks, tokens, n_best, document_spans(best, hits))

    def spans(self, question: str, hits: Sequence[Hit]) -> list[ChunkSpan]:
        """Every candidate span of every chunk, checked to be the chunk's text at its offsets."""
        per_chunk = self.reader.read(question, [h.chunk.text for h in hits])
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
