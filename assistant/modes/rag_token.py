"""RAG-Token: each answer token may come from another chunk (Lewis et al. 2020)."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..config import AnswerConfig
from ..conversation import Turn
from ..generator import Generator
from ..grounding import pmi
from ..lockstep import LockstepBatch, score_continuations
from ..marginals import question_likelihood_prior, rag_token_posterior
from ..prompts import build_prompts, chunk_contexts
from ..quotes import Quotable
from .base import ModeBase, QuestionSettings, doc_logprior, prior_scores
from .beam import BeamSettings
from .grounded import StepEvidence, quotable_of, support_stream, with_support
from .mixture import decoding_batch, stream_grounded


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
        contexts = chunk_contexts(hits, question, cfg) + [None]
        prompts = build_prompts(self.generator, question, history, contexts, cfg)
        scored = question_tokens(prompts) if cfg.prior_question_weight > 0 else 0
        tokens: list[TokenProvenance] = []
        with decoding_batch(self.generator, prompts, settings.own.beam_size) as batch:
            first = batch.prefill_scored(scored)  # the question's log-probs come with decoding's own prefill
            prior = reranked_prior(hits, cfg, first.last_logprobs[:-1].sum(dim=-1))  # (k,)
            evidence = self._evidence(prompts, prior, settings, quotable_of(self.generator, hits, question, cfg),
                                      prefilled=(batch, first.next_logprobs), question=question)
            for token in with_support(evidence, support_stream(hits, question, cfg)):
                tokens.append(token)
                yield token
        posteriors = [torch.tensor(t.posterior) for t in tokens]
        answer_posterior = torch.stack(posteriors).mean(dim=0) if posteriors else prior.exp()  # (k,)
        chunks = chunks_of(hits, prior.exp().tolist(), answer_posterior.tolist())
        yield Answer("".join(t.text for t in tokens), self.name, chunks, tuple(tokens))

    def _evidence(self, prompts: list[list[int]], prior: torch.Tensor, settings: QuestionSettings,
                  quotable: Quotable | None = None, *,
                  prefilled: tuple[object, torch.Tensor] | None = None, question: str = "") -> Iterator[StepEvidence]:
        for step, text in stream_grounded(self.generator, prompts, prior, settings.shared, settings.own.beam_size,
                                          quotable, prefilled=prefilled, question=question):
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


def question_tokens(prompts: Sequence[Sequence[int]]) -> int:
    """How many trailing tokens of the prompts (the chunks', then the closed-book one) score the question,
    log p(x | z): those every prompt ends with (the question, after the context, and the template's
    closing tokens), short of a whole prompt (a scored token needs one before it)."""
    return min(common_suffix_length(prompts), min(map(len, prompts)) - 1)


def reranked_prior(hits: Sequence[Hit], cfg: AnswerConfig, question_logprobs: torch.Tensor) -> torch.Tensor:
    """log p(z|x) ∝ s(z, x) / T + weight · log p(x | z) (``answer.prior_question_weight``; 0: the
    retrieval prior alone).  question_logprobs: (k,) log p(x | z).  Returns (k,)."""
    if cfg.prior_question_weight > 0:
        return question_likelihood_prior(prior_scores(hits, cfg.prior_score), question_logprobs, cfg.prior_temperature,
                                         cfg.prior_question_weight)  # (k,)
    return doc_logprior(hits, cfg)  # (k,)


def question_logprobs(generator: Generator, chunk_prompts: Sequence[Sequence[int]],
                      null_prompt: Sequence[int]) -> torch.Tensor:
    """log p(x | z) under the generator for each chunk prompt by an extra prefill: the reference for
    the log-probs the mode takes from its decoding prefill (``LockstepBatch.prefill_scored`` of
    :func:`question_tokens`; tests and bench/rag_token_speed.py compare the two). Teacher-forced
    log-probability of the tokens every prompt ends with, the closed-book one included, given
    everything before them; a prefill of the k prompts without them (its keys and values go to the
    prefix cache, so the decoding prefill then runs only the question), then the question. Returns (k,)."""
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
