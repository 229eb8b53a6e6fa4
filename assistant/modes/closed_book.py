"""Closed book baseline: the generator alone, no retrieval."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance
from ..conversation import Turn
from ..prompts import build_prompts
from ..support import SupportStream, pmi_labeller
from .base import ModeBase, QuestionSettings
from .beam import BeamSettings
from .grounded import StepEvidence, with_support
from .mixture import stream_mixture


class ClosedBookMode(ModeBase):
    """p(y|x) of the plain LM on the question and the conversation; no chunks, no provenance:
    every token's support is "model" (its closed-book probability is its own)."""

    name = "closed-book"
    concurrent = True
    uses_retrieval = False
    Settings = BeamSettings
    request_settings = ("beam_size",)

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Iterator[TokenProvenance | Answer]:
        settings = settings or self.defaults()
        prompts = build_prompts(self.generator, question, history, [None], settings.shared)
        decoded = stream_mixture(self.generator, prompts, torch.zeros(1), settings.shared, settings.own.beam_size,
                                 question=question)
        evidence = (StepEvidence(text, math.exp(step.logprob), (), [], math.exp(step.logprob)) for step, text in decoded)
        tokens: list[TokenProvenance] = []
        for token in with_support(evidence, SupportStream(pmi_labeller([], question), question)):
            tokens.append(token)
            yield token
        yield Answer("".join(t.text for t in tokens), self.name, (), tuple(tokens))
