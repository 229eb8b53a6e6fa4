"""RAG-Token: each answer token may come from another chunk (Lewis et al. 2020)."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..conversation import Turn
from ..grounding import pmi
from ..marginals import rag_token_posterior
from ..prompts import build_prompts, chunk_context
from .base import ModeBase, QuestionSettings, doc_logprior
from .beam import BeamSettings
from .grounded import StepEvidence, support_stream, with_support
from .mixture import stream_grounded


class RagTokenMode(ModeBase):
    """p(y_i|x,y_<i) = Σ_z p(z|x) p(y_i|x,z,y_<i), the k chunk-conditioned prompts and the null
    document (the closed-book prompt) decoded in lockstep (k + 1 rows).

    With ``answer.context_weight`` > 0 each chunk's distribution is first contrasted with the null
    document's (context-aware decoding). Each token carries p(z|x,y_i,y_<i) ∝ p(z|x)
    p(y_i|x,z,y_<i) (the paper's Figure 2) and its support: PMI under each chunk against ∅. A
    chunk's answer-level posterior is the mean of its token posteriors.
    """

    name = "rag-token"
    concurrent = True
    Settings = BeamSettings
    request_settings = ("beam_size",)

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Iterator[TokenProvenance | Answer]:
        settings = settings or self.defaults()
        cfg = settings.shared
        prior = doc_logprior(hits, cfg)  # (k,)
        contexts = [chunk_context(h, cfg.chunk_chars) for h in hits] + [None]
        prompts = build_prompts(self.generator, question, history, contexts, cfg)
        tokens: list[TokenProvenance] = []
        evidence = self._evidence(prompts, prior, settings)
        for token in with_support(evidence, support_stream(hits, question, cfg)):
            tokens.append(token)
            yield token
        posteriors = [torch.tensor(t.posterior) for t in tokens]
        answer_posterior = torch.stack(posteriors).mean(dim=0) if posteriors else prior.exp()  # (k,)
        chunks = chunks_of(hits, prior.exp().tolist(), answer_posterior.tolist())
        yield Answer("".join(t.text for t in tokens), self.name, chunks, tuple(tokens))

    def _evidence(self, prompts: list[list[int]], prior: torch.Tensor, settings: QuestionSettings) -> Iterator[StepEvidence]:
        for step, text in stream_grounded(self.generator, prompts, prior, settings.shared, settings.own.beam_size):
            rows = torch.tensor(step.row_logprobs)  # (k + 1,): the chunks, then ∅
            docs, null = rows[:-1], rows[-1]  # (k,), ()
            posterior = rag_token_posterior(docs, prior)  # (k,)
            yield StepEvidence(text, math.exp(step.logprob), tuple(posterior.tolist()), pmi(docs, null).tolist(),
                               math.exp(float(null)))
