"""The answer-mode extension point: one protocol, a base that derives the rest, and the prior.

A mode is registered in the entry-point group ``footnotes.modes`` as a class taking
``(generator, config)``. A subclass of :class:`ModeBase` overrides one of :meth:`ModeBase.stream`
(modes that choose tokens one by one) or :meth:`ModeBase.answer` (modes that only know the
answer at the end); the other is derived.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol, Sequence, runtime_checkable

import torch

from knowledge.types import Hit

from ..answer import Answer, TokenProvenance
from ..config import AnswerConfig
from ..conversation import Turn
from ..generator import Generator
from ..marginals import retrieval_prior

MODES_GROUP = "footnotes.modes"


@runtime_checkable
class AnswerMode(Protocol):
    """Turns a question, the conversation so far and the retrieved chunks into an answer with provenance."""

    uses_retrieval: bool

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Answer: ...

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Iterator[TokenProvenance | Answer]:
        """Each token's provenance as soon as it is final, then the finished Answer (always last)."""
        ...


@dataclass(frozen=True)
class ModeResources:
    """What a mode may need beyond the generator and its settings: the knowledge store (chunk texts,
    the manifest) and the data dir (where a mode keeps derived data such as the kNN-LM datastore)."""

    store: Any = None  # knowledge.store.KnowledgeStore, or None (tests, closed-book use)
    data_dir: Path | None = None
    knn: Any = None  # assistant.config.KnnConfig: how the kNN-LM datastore is built; None = its defaults


class ModeBase:
    name: ClassVar[str] = ""
    uses_retrieval: ClassVar[bool] = True

    def __init__(self, generator: Generator, config: AnswerConfig) -> None:
        self.generator = generator
        self.config = config

    @classmethod
    def create(cls, generator: Generator, config: AnswerConfig, resources: ModeResources) -> "ModeBase":
        """Build the mode; modes that need ``resources`` (a datastore, a reader) override this."""
        return cls(generator, config)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.answer is ModeBase.answer and cls.stream is ModeBase.stream:
            raise TypeError(f"{cls.__name__} must override answer() or stream()")

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Answer:
        last = None
        for last in self.stream(question, history, hits):
            pass
        if not isinstance(last, Answer):
            raise TypeError(f"{type(self).__name__}.stream() must end with an Answer")
        return last

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Iterator[TokenProvenance | Answer]:
        answer = self.answer(question, history, hits)
        yield from answer.tokens
        yield answer


def prior_scores(hits: Sequence[Hit], which: str) -> torch.Tensor:
    """The retrieval scores behind p(z|x).  Returns (k,).

    "dense" (default): the cosine similarity of question and chunk embeddings, the analogue
    of the paper's p(z|x) ∝ exp(d(z)ᵀq(x)): a calibrated similarity, unlike a fused rank
    score whose scale depends on the fusion method. A hit that only BM25 found gets the
    lowest dense score of the others. On a 12-question Python-docs dev set, rag-token
    answered 6/12 with "dense" at temperature 0.05 (5/12 at 0.1, 6/12 at 0.02) and 4/12
    with "fused" at 0.1. "fused": the score the hits are ordered by. "uniform": all equal.
    """
    if which == "uniform":
        return torch.zeros(len(hits))
    if which == "dense":
        dense = [h.dense_score for h in hits]
        known = [d for d in dense if d is not None]
        if known:
            return torch.tensor([min(known) if d is None else d for d in dense], dtype=torch.float32)
    return torch.tensor([h.score for h in hits], dtype=torch.float32)


def doc_logprior(hits: Sequence[Hit], config: AnswerConfig) -> torch.Tensor:
    """log p(z|x) over the hits.  Returns (k,)."""
    if not hits:
        raise ValueError("this mode needs at least one retrieved chunk")
    return retrieval_prior(prior_scores(hits, config.prior_score), config.prior_temperature)
