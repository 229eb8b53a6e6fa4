"""Datastore entries from text: knowledge chunks (each on its own) or one long text file (in windows)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from knowledge.types import Chunk

from ..config import KnnConfig
from ..generator import Generator
from .keys import encode, encode_batch, key_module
from .segments import ChunkEntries

BATCH_TOKENS = 4096  # padded tokens per forward pass when encoding short chunks together


def model_fingerprint(model: Any) -> str:
    """Identifies the model the keys came from: its shape, dtype, quantized layers (int8 Linear
    layers hold no parameters, so the dtype alone would not tell int8 from float32) and a hash of
    some of its weights."""
    cfg = model.config
    quantized = sorted({f"{type(m).__module__}.{type(m).__name__}" for m in model.modules()
                        if ".quantized" in type(m).__module__})
    described = [type(model).__name__, cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers,
                 str(next(model.parameters()).dtype)]
    h = hashlib.sha1(json.dumps(described + [quantized] if quantized else described).encode())  # unquantized: as before
    for p in list(key_module(model).parameters())[:1] + list(model.get_output_embeddings().parameters())[:1]:
        h.update(p.detach().float().reshape(-1)[:65536].numpy().tobytes())
    return h.hexdigest()[:16]


def tokenize(generator: Generator, text: str) -> tuple[list[int], list[int]]:
    """(token ids, character offset of each token) of a text, without special tokens."""
    tok = generator.tokenizer
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [int(start) for start, _ in enc["offset_mapping"]]
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    return ids, [-1] * len(ids)  # a slow tokenizer gives no offsets: positions stay token indexes only


def chunk_entries(generator: Generator, chunks: Sequence[Chunk], config: KnnConfig) -> list[ChunkEntries]:
    """One ChunkEntries per chunk: a key for each of its positions but the last, whose value is the
    next token. Each chunk is encoded on its own (its text is its whole context); short chunks share
    padded forward passes, chunks longer than ``knn.context_tokens`` slide."""
    tokenized = [tokenize(generator, c.text) for c in chunks]
    keys: list[np.ndarray | None] = [None] * len(chunks)
    short = [i for i, (ids, _) in enumerate(tokenized) if 2 <= len(ids) <= config.context_tokens]
    short.sort(key=lambda i: len(tokenized[i][0]))  # similar lengths share a batch: little padding
    for batch in _batches(short, [len(tokenized[i][0]) for i in short]):
        for i, k in zip(batch, encode_batch(generator.model, [tokenized[i][0] for i in batch], generator.pad_id)):
            keys[i] = k.numpy()
    for i, (ids, _) in enumerate(tokenized):
        if len(ids) > config.context_tokens:
            parts = encode(generator.model, ids, config.context_tokens, config.stride_tokens)
            keys[i] = torch.cat([p.keys for p in parts]).numpy()
    out = []
    for chunk, (ids, offsets), k in zip(chunks, tokenized, keys):
        n = max(len(ids) - 1, 0)
        k = np.zeros((0, key_size_of(generator)), dtype=np.float32) if k is None else k
        out.append(ChunkEntries(chunk.chunk_id, chunk.doc_id, chunk.text, k, np.asarray(ids[1:], dtype=np.int64),
                                np.arange(1, n + 1), np.asarray(offsets[1:], dtype=np.int64)))
    return out


def text_entries(generator: Generator, text: str, source: str, config: KnnConfig, max_tokens: int = 0,
                 tokens: tuple[list[int], list[int]] | None = None) -> Iterator[ChunkEntries]:
    """Entries for one long text (a corpus file): every position gets the context of a sliding window
    (see :func:`assistant.knn.keys.windows`). Each window's positions form one pseudo-chunk
    ``"<source>#<n>"`` whose text is the span of its value tokens. ``max_tokens`` > 0 keeps the first
    that many tokens; ``tokens`` is :func:`tokenize`'s result when the caller has it already."""
    ids, offsets = tokens or tokenize(generator, text)
    if max_tokens:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    ends = offsets[1:] + [len(text)]  # a token's text runs to the next token's start
    for n, part in enumerate(encode(generator.model, ids, config.context_tokens, config.stride_tokens)):
        first, last = int(part.positions[0]) + 1, int(part.positions[-1]) + 1  # the value tokens
        lo, hi = max(offsets[first], 0), max(ends[last], 0)
        chars = np.asarray(offsets[first : last + 1], dtype=np.int64) - lo
        yield ChunkEntries(f"{source}#{n}", source, text[lo:hi], part.keys.numpy(), part.values.numpy(),
                           np.arange(first, last + 1), chars)


def key_size_of(generator: Generator) -> int:
    return int(generator.model.config.hidden_size)


def _batches(order: list[int], lengths: list[int]) -> Iterator[list[int]]:
    batch: list[int] = []
    for i, length in zip(order, lengths):
        if batch and (len(batch) + 1) * length > BATCH_TOKENS:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
