"""Concat baseline: every retrieved chunk pasted into one prompt, as most RAG products do."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..conversation import Turn
from ..prompts import build_prompts, concat_context
from .base import ModeBase, doc_logprior
from .mixture import stream_mixture


class ConcatMode(ModeBase):
    """The plain LM on one prompt holding all k chunks. It has no per-chunk distribution, so
    chunks carry the retrieval prior only (posterior ``None``) and tokens no posterior."""

    name = "concat"

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Iterator[TokenProvenance | Answer]:
        cfg = self.config
        prior = doc_logprior(hits, cfg)  # (k,)
        prompts = build_prompts(self.generator, question, history, [concat_context(hits, cfg.chunk_chars)], cfg)
        tokens: list[TokenProvenance] = []
        for step, text in stream_mixture(self.generator, prompts, torch.zeros(1), cfg):
            tokens.append(TokenProvenance(text, math.exp(step.logprob)))
            yield tokens[-1]
        chunks = chunks_of(hits, prior.exp().tolist(), None)
        yield Answer("".join(t.text for t in tokens), self.name, chunks, tuple(tokens))
