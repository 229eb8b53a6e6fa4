"""RAG-Token: each answer token may come from another chunk (Lewis et al. 2020)."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..conversation import Turn
from ..marginals import rag_token_posterior
from ..prompts import build_prompts, chunk_context
from .base import ModeBase, doc_logprior
from .mixture import stream_mixture


class RagTokenMode(ModeBase):
    """p(y_i|x,y_<i) = Σ_z p(z|x) p(y_i|x,z,y_<i), the k chunk-conditioned prompts decoded in lockstep.

    Each token carries p(z|x,y_i,y_<i) ∝ p(z|x) p(y_i|x,z,y_<i) (the paper's Figure 2). A chunk's
    answer-level posterior is the mean of its token posteriors: the share of the answer it explains.
    """

    name = "rag-token"

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Iterator[TokenProvenance | Answer]:
        cfg = self.config
        prior = doc_logprior(hits, cfg)  # (k,)
        contexts = [chunk_context(h, cfg.chunk_chars) for h in hits]
        prompts = build_prompts(self.generator, question, history, contexts, cfg)
        tokens: list[TokenProvenance] = []
        posteriors: list[torch.Tensor] = []
        for step, text in stream_mixture(self.generator, prompts, prior, cfg):
            posterior = rag_token_posterior(torch.tensor(step.row_logprobs), prior)  # (k,)
            posteriors.append(posterior)
            tokens.append(TokenProvenance(text, math.exp(step.logprob), tuple(posterior.tolist())))
            yield tokens[-1]
        answer_posterior = torch.stack(posteriors).mean(dim=0) if posteriors else prior.exp()  # (k,)
        chunks = chunks_of(hits, prior.exp().tolist(), answer_posterior.tolist())
        yield Answer("".join(t.text for t in tokens), self.name, chunks, tuple(tokens))
