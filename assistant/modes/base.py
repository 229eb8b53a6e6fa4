"""The answer-mode extension point: one protocol, a base that derives the rest, and the prior.

A mode is registered in the entry-point group ``footnotes.modes`` as a class. It declares what it
needs and what it may be told:

- ``Settings``: a frozen dataclass of its own settings (type, default and a ``# comment`` per
  field), read from ``[answer.<mode>]``, written into config.toml and shown on the web page;
- ``request_settings``: the names of those a single question may change (the HTTP API's
  ``settings``, the page's panel); never a model, a path or a file;
- ``uses_retrieval`` (and :meth:`ModeBase.retrieves` where it depends on the settings), and
  :meth:`ModeBase.prepare` for work to do before the first question (a datastore);
- ``concurrent``: whether the server may generate its answers alongside others' (default False:
  a plugin runs alone unless it says otherwise).

A mode is built once per process; each question's settings (:class:`QuestionSettings`) are passed to
:meth:`ModeBase.answer` / :meth:`ModeBase.stream`. A subclass of :class:`ModeBase` overrides one
of them (``stream`` for modes that choose tokens one by one, ``answer`` for modes that only know
the answer at the end); the other is derived.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol, Sequence, runtime_checkable

import torch

from knowledge.progress import Progress
from knowledge.types import Hit

from ..answer import Answer, TokenProvenance
from ..config import MODES_GROUP, SHARED_KEYS, AnswerConfig
from ..conversation import Turn
from ..generator import Generator
from ..marginals import retrieval_prior

__all__ = ["MODES_GROUP", "AnswerMode", "ModeBase", "ModeResources", "NoSettings", "QuestionSettings", "doc_logprior",
           "prior_scores"]


@dataclass(frozen=True)
class NoSettings:
    """The settings of a mode that has none of its own."""


@dataclass(frozen=True)
class QuestionSettings:
    """What one question is answered with: the settings every mode shares (``[answer]``) and the
    mode's own (its ``Settings`` dataclass, from ``[answer.<mode>]``), per-request changes applied."""

    shared: AnswerConfig
    own: Any

    @property
    def mode(self) -> str:
        return self.shared.mode


@runtime_checkable
class AnswerMode(Protocol):
    """Turns a question, the conversation so far and the retrieved chunks into an answer with provenance."""

    uses_retrieval: bool

    def retrieves(self, settings: QuestionSettings) -> bool: ...

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Answer: ...

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Iterator[TokenProvenance | Answer]:
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
    uses_retrieval: ClassVar[bool] = True  # whether the mode can use retrieved chunks at all
    Settings: ClassVar[type] = NoSettings  # the mode's own settings: [answer.<name>]
    request_settings: ClassVar[tuple[str, ...]] = ()  # fields of Settings one question may change
    # whether the server may generate this mode's answers while it generates others (their greedy
    # rows sharing forward passes through Generator.lockstep): a mode that hooks the model or
    # assumes it runs alone says False, and then runs alone
    concurrent: ClassVar[bool] = False

    def __init__(self, generator: Generator, config: AnswerConfig, settings: Any = None) -> None:
        """``settings``: the mode's own defaults; None = its ``[answer.<name>]`` table in ``config.modes``."""
        self.generator = generator
        self.config = config
        self.settings = settings if settings is not None else own_settings(type(self), config)

    @classmethod
    def create(cls, generator: Generator, config: AnswerConfig, resources: ModeResources) -> "ModeBase":
        """Build the mode once per process; modes that need ``resources`` (a datastore, a reader) override this."""
        return cls(generator, config)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.answer is ModeBase.answer and cls.stream is ModeBase.stream:
            raise TypeError(f"{cls.__name__} must override answer() or stream()")
        check_declaration(cls)

    def defaults(self) -> QuestionSettings:
        """The settings a question gets when it changes none."""
        shared = self.config if self.config.mode == self.name or not self.name else replace(self.config, mode=self.name)
        return QuestionSettings(shared, self.settings)

    def retrieves(self, settings: QuestionSettings) -> bool:
        """Whether a question with these settings needs retrieved chunks."""
        return self.uses_retrieval

    def prepare(self, progress: Progress | None = None) -> None:
        """Work to finish before the first question (e.g. building a datastore), with progress; the
        CLI calls it in the foreground. Nothing by default."""

    def answer(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Answer:
        last = None
        for last in self.stream(question, history, hits, settings):
            pass
        if not isinstance(last, Answer):
            raise TypeError(f"{type(self).__name__}.stream() must end with an Answer")
        return last

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Iterator[TokenProvenance | Answer]:
        answer = self.answer(question, history, hits, settings)
        yield from answer.tokens
        yield answer


def own_settings(cls: type, config: AnswerConfig) -> Any:
    """A mode class's own settings from its ``[answer.<name>]`` table (its defaults without one)."""
    return config.modes.parse(cls.name, cls.Settings)


def check_declaration(cls: type) -> None:
    """A mode's declaration is consistent: Settings is a frozen dataclass, whose fields do not shadow
    the shared [answer] keys, and request_settings names its fields."""
    own = cls.Settings
    if not (dataclasses.is_dataclass(own) and own.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__name__}.Settings must be a frozen dataclass")
    names = {f.name for f in dataclasses.fields(own)}
    shadowed = sorted(names & set(SHARED_KEYS))
    if shadowed:
        raise TypeError(f"{cls.__name__}.Settings.{shadowed[0]} shadows the shared [answer] setting; rename it")
    unknown = [n for n in cls.request_settings if n not in names]
    if unknown:
        raise TypeError(f"{cls.__name__}.request_settings names {unknown[0]!r}, not a field of {own.__name__}")


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
