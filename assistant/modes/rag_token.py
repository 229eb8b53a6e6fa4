"""RAG-Token: each answer token may come from another chunk (Lewis et al. 2020)."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..conversation import Turn
from ..generator import Generator
from ..grounding import pmi
from ..lockstep import LockstepBatch, score_continuations
from ..marginals import question_likelihood_prior, rag_token_posterior
from ..prompts import build_prompts, chunk_context
from .base import ModeBase, QuestionSettings, doc_logprior, prior_scores
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
        contexts = [chunk_context(h, cfg.chunk_chars) for h in hits] + [None]
        prompts = build_prompts(self.generator, question, history, contexts, cfg)
        if cfg.prior_question_weight > 0:  # the generator reranks: p(z|x) ∝ exp(s/T) · p(x|z)^weight
            prior = question_likelihood_prior(prior_scores(hits, cfg.prior_score), question_logprobs(
                self.generator, prompts[:-1], prompts[-1]), cfg.prior_temperature, cfg.prior_question_weight)  # (k,)
        else:
            prior = doc_logprior(hits, cfg)  # (k,)
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


def common_suffix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many trailing tokens every prompt shares (the question and the chat template's closing tokens,
    when the prompts differ only in their context)."""
    n = min(map(len, prompts))
    for i in range(n):
        if len({p[len(p) - 1 - i] for p in prompts}) > 1:
            return i
    return n


def question_logprobs(generator: Generator, chunk_prompts: Sequence[Sequence[int]],
                      null_prompt: Sequence[int]) -> torch.Tensor:
    """log p(x | z) under the generator for each chunk prompt: teacher-forced log-probability of the
    tokens every prompt ends with, the closed-book one included (the question, after the context,
    and the template's closing tokens), given everything before them. One extra prefill of the k
    prompts (whose keys and values the prefix cache keeps for the decoding prefill). Returns (k,)."""
    n = common_suffix_length([*chunk_prompts, null_prompt])
    if n == 0 or any(len(p) <= n for p in chunk_prompts):
        return torch.zeros(len(chunk_prompts))
    suffix = list(chunk_prompts[0][-n:])
    batch = LockstepBatch(generator.model, [list(p[:-n]) for p in chunk_prompts], generator.pad_id,
                          generator.prefix_cache)  # kept: the decoding prefill of the same prompts then runs only the question
    state = batch.snapshot(batch.prefill())
    scores = score_continuations(generator.model, state, list(range(len(chunk_prompts))),
                                 [suffix] * len(chunk_prompts), generator.pad_id)
    return torch.stack([s.sum() for s in scores]).float()  # (k,)
