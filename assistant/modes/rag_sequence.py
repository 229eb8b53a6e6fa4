"""RAG-Sequence: one chunk explains the whole answer (Lewis et al. 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch

from knowledge.errors import ConfigError
from knowledge.types import Hit

from ..answer import Answer, RankedAnswer, TokenProvenance, chunks_of
from ..config import AnswerConfig
from ..conversation import Turn
from ..decoding import Hypothesis, beam_search, contrasted_row
from ..generator import Generator
from ..grounding import pmi
from ..lockstep import LockstepBatch, PromptState, score_continuations
from ..marginals import (
    rag_sequence_marginal,
    rag_sequence_posterior,
    rag_sequence_token_marginals,
    rag_token_posterior,
)
from ..prompts import build_prompts, chunk_contexts
from ..quotes import Quotable
from ..text_stream import pieces_of
from .base import ModeBase, QuestionSettings, doc_logprior
from .grounded import StepEvidence, quotable_of, support_stream, with_support
from .mixture import beam_shortlist, contrast_of, stop_check


@dataclass(frozen=True)
class RagSequenceSettings:
    beams: int = 2  # beams per document
    decoding: Literal["fast", "thorough"] = "fast"  # "fast" (p(y|x,z) = 0 off z's beam) or "thorough" (score every pair)
    n_best: int = 3  # hypotheses returned with their marginals

    moved_from: ClassVar[dict[str, str]] = {"rag_sequence_beams": "beams", "rag_sequence_decoding": "decoding",
                                            "n_best": "n_best"}

    def __post_init__(self) -> None:
        if self.beams < 1 or self.n_best < 1:
            raise ConfigError("rag-sequence: beams and n_best must be >= 1")
        if self.decoding not in ("fast", "thorough"):
            raise ConfigError(f'rag-sequence: decoding = "{self.decoding}": use "fast" or "thorough"')


class RagSequenceMode(ModeBase):
    """p(y|x) = Σ_z p(z|x) Π_i p(y_i|x,z,y_<i). Beam search once per chunk (all chunks in one
    batch), union of the hypotheses, then "thorough" (score every hypothesis under every chunk)
    or "fast" (p(y|x,z) = 0 where z's beam did not produce y) marginalization.

    Provenance: chunks carry p(z|x,y) of the best answer; each token carries its chain-rule
    marginal p(y_i|x,y_<i), p(z|x) p(y_i|x,z,y_<i) normalised over the chunks, and its support
    (PMI against the null document, which every beam carries as a second row). With
    ``answer.context_weight`` > 0 each beam decodes the contrasted p̃(y|x,z); hypotheses are still
    scored and marginalised with the plain p(y|x,z).
    """

    name = "rag-sequence"
    concurrent = True
    Settings = RagSequenceSettings
    request_settings = ("beams", "decoding", "n_best")

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Answer:
        settings = settings or self.defaults()
        cfg, gen = settings.shared, self.generator
        prior = doc_logprior(hits, cfg)  # (k,)
        contexts = chunk_contexts(hits, question, cfg)
        *prompts, null_prompt = build_prompts(gen, question, history, contexts + [None], cfg)
        table = hypotheses_per_chunk(gen, prompts, null_prompt, cfg, settings.own, quotable_of(gen, hits, question, cfg),
                                     question)
        seq = table.sequence_logprobs()  # (H, k)
        marginal = rag_sequence_marginal(seq, prior)  # (H,)
        posterior = rag_sequence_posterior(seq, prior)  # (H, k)
        order = marginal.argsort(descending=True)[: settings.own.n_best].tolist()
        best = order[0]
        tokens = self._tokens(table, best, prior, hits, question, cfg)
        n_best = tuple(
            RankedAnswer(self._text(table.hypotheses[h], cfg), float(marginal[h]), tuple(posterior[h].tolist()))
            for h in order
        )
        chunks = chunks_of(hits, prior.exp().tolist(), posterior[best].tolist())
        return Answer("".join(t.text for t in tokens), self.name, chunks, tokens, n_best)

    def _tokens(self, table: "HypothesisTable", h: int, prior: torch.Tensor, hits: Sequence[Hit],
                question: str, cfg: AnswerConfig) -> tuple[TokenProvenance, ...]:
        token_logprobs = table.token_matrix(h)  # (n, k), -inf where unscored
        null_logprobs = table.null[h]  # (n,)
        probs = rag_sequence_token_marginals(token_logprobs, prior).exp()  # (n,)
        posteriors = rag_token_posterior(token_logprobs, prior)  # (n, k)
        pmis = pmi(token_logprobs, null_logprobs)  # (n, k)
        hyp = table.hypotheses[h]
        answer_ids = [s.token_id for s in hyp.answer_steps]
        evidence = (
            StepEvidence(p.text, float(probs[p.index]), tuple(posteriors[p.index].tolist()), pmis[p.index].tolist(),
                         math.exp(float(null_logprobs[p.index])))
            for p in pieces_of(self.generator.decode, answer_ids, cfg.stop)
        )
        return tuple(with_support(evidence, support_stream(hits, question, cfg)))

    def _text(self, hyp: Hypothesis, cfg: AnswerConfig) -> str:
        ids = [s.token_id for s in hyp.answer_steps]
        return "".join(p.text for p in pieces_of(self.generator.decode, ids, cfg.stop))


@dataclass
class HypothesisTable:
    """The union of every chunk's beam hypotheses and, per (hypothesis, chunk) pair that was
    scored, the per-token log p(y_i|x,z,y_<i) (EOS included when the hypothesis ended with it)."""

    k: int
    hypotheses: list[Hypothesis] = field(default_factory=list)
    scored: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # (h, z) -> (n_h,)
    null: list[torch.Tensor] = field(default_factory=list)  # h -> (n_h,) log p(y_i|x,∅,y_<i)

    def add(self, hyp: Hypothesis) -> None:
        """Add a hypothesis of group z whose steps hold (log p under z, log p under ∅)."""
        ids = hyp.token_ids
        index = next((h for h, other in enumerate(self.hypotheses) if other.token_ids == ids), None)
        if index is None:
            index = len(self.hypotheses)
            self.hypotheses.append(hyp)
            self.null.append(torch.tensor([s.row_logprobs[1] for s in hyp.steps]))
        self.scored[(index, hyp.group)] = torch.tensor([s.row_logprobs[0] for s in hyp.steps])

    def missing(self) -> list[tuple[int, int]]:
        return [(h, z) for h in range(len(self.hypotheses)) for z in range(self.k) if (h, z) not in self.scored]

    def sequence_logprobs(self) -> torch.Tensor:
        """log p(y_h|x,z) for every pair, -inf where unscored.  Returns (H, k)."""
        seq = torch.full((len(self.hypotheses), self.k), -math.inf)  # (H, k)
        for (h, z), token_logprobs in self.scored.items():
            seq[h, z] = token_logprobs.sum()
        return seq

    def token_matrix(self, h: int) -> torch.Tensor:
        """Per-token log-probs of hypothesis h under every chunk, -inf where unscored.  Returns (n, k)."""
        n = len(self.hypotheses[h].steps)
        out = torch.full((n, self.k), -math.inf)  # (n, k)
        for z in range(self.k):
            if (h, z) in self.scored:
                out[:, z] = self.scored[(h, z)]
        return out


def hypotheses_per_chunk(
    generator: Generator, prompts: Sequence[Sequence[int]], null_prompt: Sequence[int], cfg: AnswerConfig,
    own: RagSequenceSettings = RagSequenceSettings(), quotable: Quotable | None = None, question: str = "",
) -> HypothesisTable:
    """Beam search per chunk prompt (one batch, one group per chunk), then the union of the
    hypotheses; with "thorough" decoding every missing pair is scored by teacher forcing.

    Every beam owns two rows, its chunk's prompt and the null prompt (rows 2z and 2z + 1): the
    null row scores each hypothesis under ∅ as it grows, and is the reference of context-aware
    decoding (``answer.context_weight``). With ``answer.quote_penalty`` the beams state only the
    names and numbers ``quotable`` admits (:mod:`assistant.quotes`), and refuse what greedy decoding refuses
    (:mod:`assistant.refusals`; the echo rule needs ``question``)."""
    paired = [row for prompt in prompts for row in (prompt, null_prompt)]  # (2k,) z0, ∅, z1, ∅, ...
    batch = LockstepBatch(generator.model, paired, generator.pad_id)
    first = batch.prefill()  # (2k, V)
    state = batch.snapshot(first) if own.decoding == "thorough" else None
    per_chunk = beam_search(
        batch, first, contrasted_row(contrast_of(cfg)), len(prompts), own.beams, generator.eos_ids,
        cfg.max_new_tokens, stop_check(generator, cfg.stop), cfg.length_penalty,
        beam_shortlist(generator, quotable, cfg, question),
    )
    table = HypothesisTable(len(prompts))
    for hyps in per_chunk:
        for hyp in hyps:
            table.add(hyp)
    if state is not None:
        score_missing(generator, state, table)
    return table


def score_missing(generator: Generator, state: PromptState, table: HypothesisTable) -> None:
    """Thorough decoding: score each hypothesis under each chunk whose beam did not produce it."""
    pairs = table.missing()
    if not pairs:
        return
    conts = [table.hypotheses[h].token_ids for h, _ in pairs]
    scores = score_continuations(generator.model, state, [2 * z for _, z in pairs], conts, generator.pad_id)
    for pair, token_logprobs in zip(pairs, scores):
        table.scored[pair] = token_logprobs
