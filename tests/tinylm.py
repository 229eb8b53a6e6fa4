"""A tiny random causal LM and an in-test word-level tokenizer with a chat template, for unit tests.

Everything is built in memory from fixed seeds: no network, no files, results known in advance.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from knowledge.types import Chunk, Hit

# Three one-fact documents (all words in WORDS) and a question one of them answers: the corpus the
# engine and mode tests share.
FACTS = [
    "ada lovelace was born in london . she wrote the first program",
    "marie curie was born in warsaw . she discovered radium and polonium",
    "alan turing was born in london . he was a mathematician",
]
QUESTION = "where was marie curie born ?"
SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
WORDS = (
    "system user assistant context question answer you answers questions using the given "
    "briefly in one sentence . , ? : [1] [2] [3] [4] [5] "
    "ada lovelace marie curie alan turing was born where she he who did what is london warsaw "
    "paris wrote first program discovered radium polonium computer science mathematician "
    "physicist chemist a an of and on to it her his tell me about year 1815 1867 1912 "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
).split()

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_model(vocab_size: int, seed: int = 0, max_positions: int = 512):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
        tie_word_embeddings=False,
        initializer_range=1.0,  # far from uniform: greedy choices are clear and depend on the prompt
    )
    return LlamaForCausalLM(config).eval()


def make_generator(seed: int = 0, max_positions: int = 512):
    from assistant.generator import Generator

    tok = make_tokenizer()
    return Generator(make_model(len(tok), seed, max_positions), tok)


def make_chunks(texts: Sequence[str]) -> list[Chunk]:
    return [Chunk(f"c{i}", f"doc{i}.md", 0, len(t), t, (f"Doc {i}",)) for i, t in enumerate(texts)]


class OverlapRetriever:
    """Test double for the retriever: score = shared words / question words, ties broken by list order."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self.queries: list[str] = []

    def search(self, query: str, k: int) -> list[Hit]:
        self.queries.append(query)
        words = set(_words(query))
        scored = []
        for order, chunk in enumerate(self.chunks):
            share = len(words & set(_words(chunk.text))) / max(len(words), 1)
            scored.append((-share, order, chunk))
        scored.sort(key=lambda t: (t[0], t[1]))
        return [Hit(c, -s, dense_score=-s, bm25_score=-s * 10) for s, _, c in scored[:k]]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())
