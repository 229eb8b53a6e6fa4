"""The dialogue engine: question + conversation -> retrieval -> answer mode -> Answer."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

from knowledge.errors import IndexUnusableError
from knowledge.registry import load_plugin, registered_names
from knowledge.types import Hit

from .answer import Answer, TokenProvenance
from .config import AnswerConfig
from .conversation import Turn, retrieval_query
from .generator import Generator
from .modes.base import MODES_GROUP, AnswerMode, ModeResources


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Hit]: ...


def mode_names() -> list[str]:
    """The registered answer modes (entry-point group ``footnotes.modes``)."""
    return registered_names(MODES_GROUP)


def load_mode(name: str, generator: Generator, config: AnswerConfig,
              resources: ModeResources | None = None) -> AnswerMode:
    """An instance of the mode registered as ``name``; an unknown name lists the registered ones."""
    cls = load_plugin(MODES_GROUP, name, what="mode")
    resources = resources or ModeResources()
    return cls.create(generator, config, resources) if hasattr(cls, "create") else cls(generator, config)


class DialogueEngine:
    """Answers questions in a conversation. Follow-up questions are retrieved with the last
    exchanges prepended (``answer.followup_turns``); the prompts keep as much history as the
    generator's context holds, dropping the oldest exchanges first."""

    def __init__(self, retriever: Retriever, generator: Generator, config: AnswerConfig | None = None,
                 resources: ModeResources | None = None) -> None:
        self.retriever = retriever
        self.generator = generator
        self.config = config or AnswerConfig()
        self.resources = resources or ModeResources()
        self._modes: dict[str, AnswerMode] = {}
        self.mode(self.config.mode)  # an unknown default mode fails now, not at the first question

    def mode(self, name: str | None = None) -> AnswerMode:
        name = name or self.config.mode
        if name not in self._modes:
            self._modes[name] = load_mode(name, self.generator, self.config, self.resources)
        return self._modes[name]

    def retrieve(self, question: str, history: Sequence[Turn] = (), k: int | None = None) -> list[Hit]:
        k = self.config.k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query = retrieval_query(question, history, self.config.followup_turns)
        return list(self.retriever.search(query, k))[:k]

    def ask(self, question: str, history: Sequence[Turn] = (), mode: str | None = None, k: int | None = None) -> Answer:
        answer_mode, hits = self._prepare(question, history, mode, k)
        return answer_mode.answer(question, history, hits)

    def stream(
        self, question: str, history: Sequence[Turn] = (), mode: str | None = None, k: int | None = None
    ) -> Iterator[TokenProvenance | Answer]:
        """Each token's provenance as soon as it is final, then the Answer (always last)."""
        answer_mode, hits = self._prepare(question, history, mode, k)
        yield from answer_mode.stream(question, history, hits)

    def _prepare(
        self, question: str, history: Sequence[Turn], mode: str | None, k: int | None
    ) -> tuple[AnswerMode, list[Hit]]:
        if not question.strip():
            raise ValueError("the question is empty")
        answer_mode = self.mode(mode)
        if not answer_mode.uses_retrieval:
            return answer_mode, []
        hits = self.retrieve(question, history, k)
        if not hits:
            raise IndexUnusableError(
                "no chunks were retrieved: the knowledge index is empty; add documents to the "
                "knowledge folder and let it sync, or ask with --mode closed-book"
            )
        return answer_mode, hits
