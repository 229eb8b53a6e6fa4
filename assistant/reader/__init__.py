"""Extractive readers for the REALM mode: a question and chunk texts in, scored spans out.

``[answer.realm] reader = "generator"`` (the default) reads with the packaged generator
(:class:`GeneratorReader`, nothing to download); any other value names an extractive
question-answering model (``AutoModelForQuestionAnswering``: a Hugging Face id or a local dir)
read by :class:`HFQAReader`, loaded once by :class:`Readers`.
"""

from __future__ import annotations

from ..config import AnswerConfig
from ..generator import Generator
from .base import Reader, SpanCandidate, candidate
from .generator_reader import GeneratorReader
from .hf_qa import HFQAReader

__all__ = ["GENERATOR_READER", "GeneratorReader", "HFQAReader", "Reader", "Readers", "SpanCandidate", "candidate"]

GENERATOR_READER = "generator"


class Readers:
    """The reader model a config names, loaded once; :meth:`reader` gives the reader for one
    question's settings on top of it (span length, windows, the shared chunk and answer lengths)."""

    def __init__(self, name: str, generator: Generator) -> None:
        self.name = name
        self.generator = generator
        self._qa = None if name == GENERATOR_READER else HFQAReader.from_pretrained(name)

    def reader(self, shared: AnswerConfig, max_answer_tokens: int, window_tokens: int, stride: int) -> Reader:
        if self._qa is None:
            return GeneratorReader(self.generator, max_answer_tokens, shared.chunk_chars,
                                   generate_tokens=shared.max_new_tokens)
        return self._qa.with_settings(max_answer_tokens=max_answer_tokens, window_tokens=window_tokens, stride=stride)
