"""Everything the web page and the HTTP API do, in one object free of any web framework:
ask (queued), search, list / upload / delete documents, show a document's indexed text."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from assistant.answer import Answer, TokenProvenance
from assistant.batching import BatchScheduler
from assistant.config import AnswerConfig
from assistant.conversation import Turn
from assistant.engine import DialogueEngine, mode_class, mode_names
from assistant.generator import Generator
from assistant.lockstep import can_extend
from assistant.modes.base import ModeResources, QuestionSettings
from knowledge.errors import ConfigError, DocumentError
from knowledge.kb import KnowledgeBase
from knowledge.retrieval import Filters
from knowledge.sources.base import WritableSource
from knowledge.store import Status
from knowledge.types import Hit, SyncReport

from . import documents as docs
from .generation import GenerationQueue, Stream
from .uploads import SavedUpload, read_blocks

log = logging.getLogger(__name__)

MAX_K = 50  # the most chunks one request may ask for (each is a forward pass in RAG modes)


class Service:
    """One knowledge base, one generator loaded once, and a queue that bounds how many answers are
    generated at once."""

    def __init__(self, kb: KnowledgeBase, generator: Generator, answer: AnswerConfig | None = None,
                 max_upload_bytes: int = 50_000_000, queue: GenerationQueue | None = None,
                 knn: Any = None, max_question_chars: int = 8000, max_question_tokens: int = 2048,
                 parallel_answers: int = 1, batch_rows: int = 96, batch_gather_ms: float = 20.0) -> None:
        """``parallel_answers`` > 1: that many answers are generated at once, the greedy rows of
        concurrent modes sharing forward passes (a :class:`BatchScheduler` on the generator)."""
        self.kb = kb
        self.generator = generator
        self.answer = answer or AnswerConfig()
        self.max_upload_bytes = max_upload_bytes
        self.max_question_chars = max_question_chars
        self.max_question_tokens = max_question_tokens
        self.queue = queue or GenerationQueue(parallel_answers)
        if self.queue.parallel > 1 and generator.batching is None and can_extend(generator.model):
            generator.batching = BatchScheduler(generator.model, generator.pad_id, batch_rows, batch_gather_ms / 1000,
                                                generator.prefix_cache)
        self.resources = ModeResources(store=kb.store, data_dir=kb.data_dir, knn=knn)  # what modes like kNN-LM build on
        self.last_report: SyncReport | None = None
        # one engine, its modes built once each (a bad default mode or mode table fails now, at start)
        self._engine = DialogueEngine(kb.retriever, generator, self.answer, self.resources)

    # -- answering ------------------------------------------------------------------------------
    def modes(self) -> list[str]:
        return mode_names()

    def settings(self, mode: str | None = None, overrides: Mapping[str, Any] | None = None) -> QuestionSettings:
        """The settings of one question: ``mode``'s defaults with per-request ``overrides`` (the shared
        keys and the mode's ``request_settings``, nothing else) applied and checked."""
        overrides = dict(overrides or {})
        settings = self._engine.settings(mode, overrides)
        if "k" in overrides and settings.shared.k > MAX_K:
            raise ConfigError(f"k = {settings.shared.k} is too large; use at most {MAX_K}")
        return settings

    def engine(self, settings: QuestionSettings | None = None) -> DialogueEngine:
        """The engine; the mode ``settings`` names is built now if it was not (an unknown mode raises
        UnknownNameError listing the modes)."""
        if settings is not None:
            self._engine.mode(settings.mode)
        return self._engine

    def stream(self, question: str, history: Sequence[Turn] = (), mode: str | None = None,
               overrides: Mapping[str, Any] | None = None) -> Stream[TokenProvenance | Answer]:
        """Queue one answer: each token's provenance as it is final, then the Answer (always last)."""
        history = tuple(history)
        check_text(question, "the question")
        for i, turn in enumerate(history):
            check_text(turn.text, f"the history (message {i + 1})")
        if not question.strip():
            raise ValueError("the question is empty; type a question")
        self._check_length(question)
        settings = self.settings(mode, overrides)
        engine = self.engine(settings)
        exclusive = not getattr(mode_class(settings.mode), "concurrent", False)
        return self.queue.stream(lambda: engine.stream(question, history, settings.mode, settings=settings), exclusive)

    def _check_length(self, question: str) -> None:
        """Refuse an over-long question before it reaches the queue: characters first (cheap), then
        generator tokens."""
        if len(question) > self.max_question_chars:
            raise ValueError(f"the question is {len(question):,} characters, over the limit of "
                             f"{self.max_question_chars:,}; shorten it (or raise server.max_question_chars)")
        tokens = len(self.generator.tokenizer(question, add_special_tokens=False)["input_ids"])
        if tokens > self.max_question_tokens:
            raise ValueError(f"the question is {tokens:,} tokens, over the limit of {self.max_question_tokens:,}; "
                             "shorten it (or raise server.max_question_tokens)")

    def ask(self, question: str, history: Sequence[Turn] = (), mode: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> Answer:
        last = None
        for last in self.stream(question, history, mode, overrides):
            pass
        if not isinstance(last, Answer):
            raise RuntimeError("the answer mode ended without an Answer")
        return last

    # -- knowledge ------------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None, filters: Filters | None = None) -> list[Hit]:
        check_text(query, "the query")
        if len(query) > self.max_question_chars:
            raise ValueError(f"the query is {len(query):,} characters, over the limit of "
                             f"{self.max_question_chars:,}; shorten it (or raise server.max_question_chars)")
        if not query.strip():
            raise ValueError("the query is empty")
        if k is not None and not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        return self.kb.retriever.search(query, k, filters)

    def documents(self) -> list[docs.DocumentInfo]:
        return docs.list_documents(self.kb)

    def status(self) -> Status:
        return self.kb.status()

    def document_text(self, doc_id: str) -> str:
        return docs.document_text(self.kb, doc_id)

    def upload_target(self) -> WritableSource:
        """The source uploads go to: the first writable one (``sources.kinds`` order)."""
        writable = self.kb.writable_sources()
        if not writable:
            raise DocumentError("no knowledge folder is open: start the server with --knowledge DIR to upload files")
        return writable[0]

    def folder(self) -> Path:
        """Where uploads are saved (the upload target's location)."""
        return Path(self.upload_target().location(""))

    def upload(self, name: str, data: bytes | Iterable[bytes]) -> SavedUpload:
        """Save a file into the writable source; its watcher indexes it within a second or so."""
        saved = self.upload_target().save(name, data, self.max_upload_bytes)
        log.info("saved upload %s (%d bytes)", saved.doc_id, saved.size)
        return saved

    def upload_file(self, name: str, path: Path) -> SavedUpload:
        return self.upload(name, read_blocks(path))

    def delete(self, doc_id: str) -> SyncReport:
        return docs.delete_document(self.kb, doc_id)

    def record(self, report: SyncReport) -> None:
        """Called by the watcher threads after each sync."""
        if report.changed or report.failed:
            self.last_report = report
            log.info("synced: +%d ~%d -%d, %d failed", len(report.added), len(report.updated),
                     len(report.removed), len(report.failed))


def check_text(text: str, what: str) -> None:
    """Refuse text that is not Unicode text: a lone surrogate (``\\ud800``, which no UTF-8 encoder,
    tokenizer or JSON writer accepts). NUL, control and bidi characters are text and pass."""
    bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        raise ValueError(f"{what} holds a lone surrogate (U+{ord(text[bad]):04X} at character {bad}), which is not "
                         "text; send valid UTF-8 / well-formed JSON strings")
