"""Concat baseline: every retrieved chunk pasted into one prompt, as most RAG products do."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..conversation import Turn
from ..prompts import build_prompts, concat_context
from ..quotes import Quotable
from .base import ModeBase, QuestionSettings, doc_logprior
from .beam import BeamSettings
from .grounded import StepEvidence, quotable_of, support_stream, with_support
from .mixture import stream_grounded


class ConcatMode(ModeBase):
    """The plain LM on one prompt holding all k chunks, decoded in lockstep with the null document
    (context-aware decoding applies to the one context as to each RAG chunk). It has no per-chunk
    distribution, so chunks carry the retrieval prior only (posterior ``None``) and tokens no
    posterior; a token's PMI is that of all chunks together (the same value for each chunk), and
    copy evidence picks the chunk a supported phrase is quoted from."""

    name = "concat"
    concurrent = True
    Settings = BeamSettings
    request_settings = ("beam_size",)

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Iterator[TokenProvenance | Answer]:
        settings = settings or self.defaults()
        cfg = settings.shared
        prior = doc_logprior(hits, cfg)  # (k,)
        prompts = build_prompts(self.generator, question, history, [concat_context(hits, question, cfg), None], cfg)
        tokens: list[TokenProvenance] = []
        quotable = quotable_of(self.generator, hits, question, cfg)
        for token in with_support(self._evidence(prompts, len(hits), settings, quotable, question),
                                  support_stream(hits, question, cfg)):
            tokens.append(token)
            yield token
        chunks = chunks_of(hits, prior.exp().tolist(), None)
        yield Answer("".join(t.text for t in tokens), self.name, chunks, tuple(tokens))

    def _evidence(self, prompts: list[list[int]], k: int, settings: QuestionSettings,
                  quotable: Quotable | None = None, question: str = "") -> Iterator[StepEvidence]:
        for step, text in stream_grounded(self.generator, prompts, torch.zeros(1), settings.shared,
                                          settings.own.beam_size, quotable, question=question):
            context, null = step.row_logprobs  # log p under all chunks, under ∅
            yield StepEvidence(text, math.exp(step.logprob), (), [context - null] * k, math.exp(null))
