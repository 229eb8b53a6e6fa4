"""Perplexity of the base LM and of the kNN-LM over the same tokens of a text, in one pass.

Every token but the first is scored with the context of a sliding window (the same windows that
build datastores from text, :func:`assistant.knn.keys.windows`); its key is searched once, and
p_kNN(w) of the true next token serves every λ. Perplexity is per generator token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from knowledge.progress import NoProgress, Progress

from ..config import KnnConfig
from ..generator import Generator
from .build import text_entries, tokenize
from .datastore import Datastore
from .keys import encode, windows
from .math import interpolate, knn_target_logprob, perplexity
from .sync import SEGMENT_ENTRIES, open_datastore


@dataclass(frozen=True)
class PerplexityResult:
    tokens: int  # scored tokens
    base: float  # perplexity of the LM alone
    knn: tuple[tuple[float, float], ...]  # (λ, perplexity of the kNN-LM) per λ
    lm_seconds: float  # forward passes
    search_seconds: float  # datastore searches and p_kNN

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "base": self.base, "knn": {_fmt(lam): ppl for lam, ppl in self.knn}}


@dataclass(frozen=True)
class ScoredText:
    """A text run through the LM once: every scored position's key, true next token and log p_LM."""

    keys: torch.Tensor  # (N, D) float32
    targets: torch.Tensor  # (N,) the true next tokens
    lm_logprobs: torch.Tensor  # (N,) log p_LM(target | context)
    lm_seconds: float  # the forward passes


def evaluate_perplexity(generator: Generator, datastore: Datastore, text: str, lambdas: Sequence[float], k: int,
                        temperature: float, config: KnnConfig, max_tokens: int = 0,
                        progress: Progress | None = None) -> PerplexityResult:
    """Base and kNN-LM perplexity of ``text`` (its first ``max_tokens`` tokens when > 0)."""
    if not len(datastore):
        raise ValueError("the datastore is empty: build it from a text or a knowledge base first")
    scored = score_text(generator, text, config, max_tokens, progress)
    return knn_perplexity(scored, datastore, lambdas, k, temperature)


def score_text(generator: Generator, text: str, config: KnnConfig, max_tokens: int = 0,
               progress: Progress | None = None) -> ScoredText:
    """Keys and LM log-probs of every token of ``text`` but the first, in sliding windows."""
    progress = progress or NoProgress()
    ids, _ = tokenize(generator, text)
    ids = ids[:max_tokens] if max_tokens else ids
    if len(ids) < 2:
        raise ValueError("the text has fewer than 2 tokens: nothing to score")
    progress.start(len(windows(len(ids), config.context_tokens, config.stride_tokens)), "perplexity")
    parts = []
    started = time.perf_counter()
    for part in encode(generator.model, ids, config.context_tokens, config.stride_tokens, with_logprobs=True):
        parts.append(part)
        progress.advance()
    return ScoredText(torch.cat([p.keys for p in parts]), torch.cat([p.values for p in parts]),
                      torch.cat([p.lm_logprobs for p in parts]).double(), time.perf_counter() - started)


def knn_perplexity(scored: ScoredText, datastore: Datastore, lambdas: Sequence[float], k: int, temperature: float,
                   batch: int = 1024) -> PerplexityResult:
    """Perplexity of the LM and of the kNN-LM for each λ over the scored tokens: one search per
    token, whose p_kNN of the true token serves every λ."""
    started = time.perf_counter()
    knn_parts = []
    for lo in range(0, len(scored.targets), batch):
        found = datastore.search(scored.keys[lo : lo + batch].numpy(), k)  # (n, k) each
        knn_parts.append(knn_target_logprob(torch.from_numpy(found.distances), torch.from_numpy(found.values),
                                            scored.targets[lo : lo + batch], temperature))  # (n,)
    knn = torch.cat(knn_parts)  # (N,)
    lm = scored.lm_logprobs  # (N,)
    result = tuple((lam, perplexity(interpolate(lm, knn, lam))) for lam in lambdas)
    return PerplexityResult(len(lm), perplexity(lm), result, scored.lm_seconds, time.perf_counter() - started)


def datastore_from_text(generator: Generator, path: Path, root: Path, config: KnnConfig, max_tokens: int = 0,
                        progress: Progress | None = None) -> Datastore:
    """The datastore of a text file in ``root``: built once (every position of the file, in windows),
    then reused while ``root`` holds a complete one."""
    datastore = open_datastore(root, generator, config)
    if datastore.complete:
        return datastore
    progress = progress or NoProgress()
    text = Path(path).read_text(encoding="utf-8")
    tokens = tokenize(generator, text)
    n_tokens = min(len(tokens[0]), max_tokens) if max_tokens else len(tokens[0])
    progress.start(len(windows(n_tokens, config.context_tokens, config.stride_tokens)), "kNN-LM datastore")
    stale = datastore.chunk_ids()  # an interrupted build starts over
    pending: list = []
    for entries in text_entries(generator, text, Path(path).name, config, max_tokens, tokens):
        pending.append(entries)
        if sum(len(e.values) for e in pending) >= SEGMENT_ENTRIES:
            datastore.apply(pending, stale)
            pending, stale = [], set()
        progress.advance()
    datastore.apply(pending, stale, complete=True)
    return datastore


def _fmt(lam: float) -> str:
    return f"{lam:g}"
