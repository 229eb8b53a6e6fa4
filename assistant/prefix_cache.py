"""Keys and values of prompt prefixes already computed, reused by later prompts that start the same way.

A RAG-Token prompt puts the chunk before the question (system prompt, "Context:", the chunk, then
"Question: ..."), so a chunk retrieved again for another question, or by another user, has the
same prompt up to its question. Its keys and values there are the same too: attention is causal,
so a prefix's KV depends on the prefix alone. Prefill then runs only the tokens after the longest
cached prefix (:meth:`assistant.lockstep.LockstepBatch.prefill`); the first token comes sooner.

Prefixes are matched at block boundaries (every ``block`` tokens), as vLLM's automatic prefix
caching does: one stored prompt answers for each of its block-aligned prefixes, by views of one
tensor. Matches are checked token by token, never by hash alone. Entries are evicted least recently
used first once their bytes pass ``budget_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class _Entry:
    ids: tuple[int, ...]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (H, L, D) twice
    nbytes: int


class PrefixCache:
    """Prompt prefix -> its per-layer keys and values, least recently used out first."""

    def __init__(self, budget_bytes: int, block: int = 16) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.budget_bytes = budget_bytes
        self.block = block
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # id -> entry, oldest use first
        self._by_prefix: dict[int, int] = {}  # hash of a block-aligned prefix -> entry id
        self._next_id = 0
        self.nbytes = 0
        self.hit_tokens = 0  # prompt tokens served from the cache (tests, benchmarks)
        self.lookups = 0

    def lookup(self, ids: Sequence[int], compute: int = 1
               ) -> tuple[int, tuple[tuple[torch.Tensor, torch.Tensor], ...] | None]:
        """(P, kv): the longest cached block-aligned prefix of ``ids`` that leaves its last ``compute``
        tokens to compute (at least the last one: its logits are the point; more when a prefill
        scores the prompt's last tokens too) and its per-layer (H, P, D) keys and values; (0, None) if none."""
        if compute < 1:
            raise ValueError(f"compute must be at least 1 (the last token's logits), got {compute}")
        ids = tuple(ids)
        with self._lock:
            self.lookups += 1
            for length in range(self._aligned(len(ids) - compute), 0, -self.block):
                entry_id = self._by_prefix.get(hash(ids[:length]))
                entry = self._entries.get(entry_id) if entry_id is not None else None
                if entry is not None and entry.ids[:length] == ids[:length]:
                    self._entries.move_to_end(entry_id)
                    self.hit_tokens += length
                    return length, tuple((k[:, :length], v[:, :length]) for k, v in entry.kv)
        return 0, None

    def store(self, ids: Sequence[int], kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep a prompt's per-layer (H, L, D) keys and values (L = len(ids); copies are made)."""
        ids = tuple(ids)
        top = self._aligned(len(ids) - 1)
        if top == 0 or self._touch(ids[:top]):  # nothing to keep, or already here (the same prompt again)
            return
        kv = tuple((k[:, :top].clone(), v[:, :top].clone()) for k, v in kv)
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.budget_bytes:
            return
        with self._lock:
            entry_id, self._next_id = self._next_id, self._next_id + 1
            self._entries[entry_id] = _Entry(ids[:top], kv, nbytes)
            self.nbytes += nbytes
            for length in range(self.block, top + 1, self.block):
                self._by_prefix[hash(ids[:length])] = entry_id  # the newest entry answers for each prefix
            while self.nbytes > self.budget_bytes:
                self._evict_oldest()

    def _touch(self, prefix: tuple[int, ...]) -> bool:
        """Whether an entry holds exactly this prefix at its end; it becomes the most recently used."""
        with self._lock:
            entry_id = self._by_prefix.get(hash(prefix))
            entry = self._entries.get(entry_id) if entry_id is not None else None
            if entry is None or entry.ids != prefix:
                return False
            self._entries.move_to_end(entry_id)
            return True

    def _evict_oldest(self) -> None:
        entry_id, entry = self._entries.popitem(last=False)
        self.nbytes -= entry.nbytes
        for length in range(self.block, len(entry.ids) + 1, self.block):
            key = hash(entry.ids[:length])
            if self._by_prefix.get(key) == entry_id:
                del self._by_prefix[key]

    def _aligned(self, n: int) -> int:
        return max(0, n) // self.block * self.block

    def __len__(self) -> int:
        return len(self._entries)
