"""The dialogue engine: question + conversation -> retrieval -> answer mode -> Answer."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Iterator, Mapping, Protocol, Sequence

from knowledge.errors import IndexUnusableError
from knowledge.registry import load_plugin, registered_names
from knowledge.types import Hit

from .answer import Answer, TokenProvenance
from .config import AnswerConfig
from .conversation import Turn, retrieval_query
from .generator import Generator
from .modes.base import MODES_GROUP, AnswerMode, ModeResources, QuestionSettings, own_settings
from .overrides import question_settings


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Hit]: ...


def mode_names() -> list[str]:
    """The registered answer modes (entry-point group ``footnotes.modes``)."""
    return registered_names(MODES_GROUP)


def mode_class(name: str) -> type:
    """The class registered as ``name``; an unknown name lists the registered ones."""
    return load_plugin(MODES_GROUP, name, what="mode")


def load_mode(name: str, generator: Generator, config: AnswerConfig,
              resources: ModeResources | None = None) -> AnswerMode:
    """An instance of the mode registered as ``name``; an unknown name lists the registered ones."""
    cls = mode_class(name)
    resources = resources or ModeResources()
    return cls.create(generator, config, resources) if hasattr(cls, "create") else cls(generator, config)


def check_mode_tables(config: AnswerConfig) -> None:
    """Parse every ``[answer.<mode>]`` table of the config now (strictly: an unknown key names the
    key and the file), so that a mistake fails at start, not at the first question of that mode."""
    for name in config.modes.tables:
        own_settings(mode_class(name), config)


class DialogueEngine:
    """Answers questions in a conversation. Each mode is built once, at its first use; a question's
    settings (:class:`QuestionSettings`) go with the question. Follow-up questions are retrieved with
    the last exchanges prepended (``answer.followup_turns``); the prompts keep as much history as the
    generator's context holds, dropping the oldest exchanges first."""

    def __init__(self, retriever: Retriever, generator: Generator, config: AnswerConfig | None = None,
                 resources: ModeResources | None = None) -> None:
        self.retriever = retriever
        self.generator = generator
        self.config = config or AnswerConfig()
        self.resources = resources or ModeResources()
        self._modes: dict[str, AnswerMode] = {}
        self._lock = threading.RLock()
        check_mode_tables(self.config)
        self.mode(self.config.mode)  # an unknown default mode fails now, not at the first question

    def mode(self, name: str | None = None) -> AnswerMode:
        """The mode registered as ``name`` (default: ``answer.mode``), built at its first use."""
        name = name or self.config.mode
        with self._lock:
            if name not in self._modes:
                self._modes[name] = load_mode(name, self.generator, self.config, self.resources)
            return self._modes[name]

    def settings(self, mode: str | None = None, overrides: Mapping[str, Any] | None = None) -> QuestionSettings:
        """The settings of one question: ``mode``'s defaults with per-request ``overrides`` (shared
        keys and the mode's ``request_settings``) applied and checked. Does not build the mode."""
        name = mode or self.config.mode
        cls = mode_class(name)
        shared = self.config if self.config.mode == name else replace(self.config, mode=name)
        return question_settings(cls, QuestionSettings(shared, own_settings(cls, self.config)), overrides or {})

    def retrieve(self, question: str, history: Sequence[Turn] = (), k: int | None = None,
                 config: AnswerConfig | None = None) -> list[Hit]:
        config = config or self.config
        k = config.k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query = retrieval_query(question, history, config.followup_turns)
        return list(self.retriever.search(query, k))[:k]

    def ask(self, question: str, history: Sequence[Turn] = (), mode: str | None = None, k: int | None = None,
            settings: QuestionSettings | None = None) -> Answer:
        answer_mode, hits, settings = self._prepare(question, history, mode, k, settings)
        return answer_mode.answer(question, history, hits, settings)

    def stream(
        self, question: str, history: Sequence[Turn] = (), mode: str | None = None, k: int | None = None,
        settings: QuestionSettings | None = None,
    ) -> Iterator[TokenProvenance | Answer]:
        """Each token's provenance as soon as it is final, then the Answer (always last)."""
        answer_mode, hits, settings = self._prepare(question, history, mode, k, settings)
        yield from answer_mode.stream(question, history, hits, settings)

    def _prepare(
        self, question: str, history: Sequence[Turn], mode: str | None, k: int | None,
        settings: QuestionSettings | None,
    ) -> tuple[AnswerMode, list[Hit], QuestionSettings]:
        if not question.strip():
            raise ValueError("the question is empty")
        answer_mode = self.mode(settings.mode if settings is not None else mode)
        settings = settings or answer_mode.defaults()
        if not answer_mode.retrieves(settings):
            return answer_mode, [], settings
        hits = self.retrieve(question, history, k, settings.shared)
        if not hits:
            raise IndexUnusableError(
                "no chunks were retrieved: the knowledge index is empty; add documents to the "
                "knowledge folder and let it sync, or ask with --mode closed-book"
            )
        return answer_mode, hits, settings
