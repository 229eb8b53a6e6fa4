"""Extractive readers for the REALM mode: a question and chunk texts in, scored spans out.

``realm_reader = "generator"`` (the default) reads with the packaged generator
(:class:`GeneratorReader`, nothing to download); any other value names an extractive
question-answering model (``AutoModelForQuestionAnswering``: a Hugging Face id or a local dir)
read by :class:`HFQAReader`.
"""

from __future__ import annotations

from ..config import REALM_GENERATOR_READER, AnswerConfig
from ..generator import Generator
from .base import Reader, SpanCandidate, candidate
from .generator_reader import GeneratorReader
from .hf_qa import HFQAReader

__all__ = ["GeneratorReader", "HFQAReader", "Reader", "SpanCandidate", "candidate", "load_reader"]


def load_reader(config: AnswerConfig, generator: Generator) -> Reader:
    """The reader that ``config.realm_reader`` names."""
    if config.realm_reader == REALM_GENERATOR_READER:
        return GeneratorReader(generator, config.realm_max_answer_tokens, config.chunk_chars,
                               generate_tokens=config.max_new_tokens)
    return HFQAReader.from_pretrained(
        config.realm_reader,
        max_answer_tokens=config.realm_max_answer_tokens,
        window_tokens=config.realm_window_tokens,
        stride=config.realm_stride,
    )
