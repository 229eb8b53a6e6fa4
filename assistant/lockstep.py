"""Several prompts decoded in lockstep: one left-padded batch, one forward pass per step, one KV cache.

Left padding puts every row's next token in the last column. The attention mask hides the
padding and the position ids count only real tokens, so each row computes what it would alone
(tests check this against unbatched runs). Rows can be re-selected (beam search) and the state
right after the prompts can be kept to score whole continuations later (RAG-Sequence "thorough").

The same masking lets batches be merged (:meth:`LockstepBatch.extend`: the shorter one is padded on
the left) and lets a step skip rows (``live``: a skipped row gets a masked hole instead of a token),
which is how :mod:`assistant.batching` decodes several users' answers in one forward pass.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T) with T the longest prompt; padding on the left."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0 at each row's first real token.  (B, T) -> (B, T)"""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class PromptState:
    """The batch right after its prompts: KV tensors per layer, mask, next positions, next-token log-probs."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (B, heads, T, head_dim) twice
    mask: torch.Tensor  # (B, T)
    next_position: torch.Tensor  # (B,)
    next_logprobs: torch.Tensor  # (B, V)


@dataclass(frozen=True)
class Prefill:
    """What a prefill computes: every row's next-token log-probs, and the teacher-forced log-probs of
    each row's last prompt tokens (the same forward pass: no extra cost but their logits)."""

    next_logprobs: torch.Tensor  # (B, V) log p(· | prompt)
    last_logprobs: torch.Tensor  # (B, n) log p(t_j | t_<j) of the row's last n prompt tokens, oldest first;
    # a row that scored fewer tokens (a shared batch's other members) has zeros (log 1) on the left


class LockstepBatch:
    """B token sequences advanced together; call :meth:`prefill` once, then :meth:`step`."""

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], pad_id: int, prefix_cache: Any = None) -> None:
        """``prefix_cache``: an :class:`assistant.prefix_cache.PrefixCache` of this model; prefill
        then computes only what follows each prompt's longest cached prefix, and keeps the rest."""
        self.model = model
        self.prompts = [list(p) for p in prompts]
        self.pad_id = pad_id
        self.prefix_cache = prefix_cache
        self.input_ids, self.mask = left_pad(prompts, pad_id)  # (B, T), (B, T)
        self.next_position = self.mask.sum(dim=-1)  # (B,)
        self.cache = _new_cache(model)
        self._cache_kw = _cache_keyword(model)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    def close(self) -> None:
        """Nothing to release (a shared batch's member leaves its scheduler here)."""

    def __enter__(self) -> "LockstepBatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prefill(self) -> torch.Tensor:
        """Run the prompts; returns the next-token log-probs (B, V)."""
        return self.prefill_scored().next_logprobs

    @torch.inference_mode()
    def prefill_scored(self, score_last: int | Sequence[int] = 0) -> Prefill:
        """Run the prompts, and score each row's last ``score_last`` prompt tokens (teacher forcing,
        in the same forward pass; one count for every row, or one per row); every count must be
        shorter than its prompt. Only those positions' logits are computed, never all of them."""
        last = [score_last] * self.rows if isinstance(score_last, int) else list(score_last)
        if len(last) != self.rows or any(not 0 <= n < len(p) for n, p in zip(last, self.prompts)):
            raise ValueError(f"score_last needs one count per row, each from 0 to its prompt's length - 1: got {score_last}")
        found = ([self.prefix_cache.lookup(p, compute=n + 1) for p, n in zip(self.prompts, last)]
                 if self.prefix_cache is not None else [])  # a scored token's logits come from the token before it
        keep = max(last) + 1
        if any(kv is not None for _, kv in found):
            logits = self._forward_after_prefixes(found, keep)  # (B, keep, V)
        else:
            logits = self._forward(self.input_ids, positions_of(self.mask), keep)  # (B, keep, V)
        if self.prefix_cache is not None:
            for row, prompt in enumerate(self.prompts):
                real = self.mask[row].nonzero().squeeze(-1)  # (L,) the row's columns that hold its tokens
                self.prefix_cache.store(prompt, [(layer.keys[row][:, real], layer.values[row][:, real])
                                                 for layer in self.cache.layers])
        next_logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B, V)
        return Prefill(next_logprobs, last_token_logprobs(logits[:, :-1], self.prompts, last))

    def _forward_after_prefixes(self, found: list[tuple[int, Any]], keep: int = 1) -> torch.Tensor:
        """Prefill from cached prefixes: row r's P_r cached tokens go into the KV cache, right-aligned
        in C = max P columns; the rest of each prompt runs as S = max (L - P) new tokens, left-padded.
        Holes between the two are masked; positions count only real tokens, so every row computes
        what a full prefill would. Returns the logits of the last ``keep`` columns (B, keep, V)."""
        width = max(p for p, _ in found)  # C
        layers = len(next(kv for _, kv in found if kv is not None))
        self._load_cache(width, [[([row], kv[index][0].unsqueeze(0), kv[index][1].unsqueeze(0))
                                  for row, (_, kv) in enumerate(found) if kv is not None] for index in range(layers)])
        cached = torch.zeros((self.rows, width), dtype=torch.long)  # (B, C)
        for row, (p, _) in enumerate(found):
            if p:
                cached[row, width - p :] = 1
        suffix_ids, suffix_mask = left_pad([prompt[p:] for prompt, (p, _) in zip(self.prompts, found)], self.pad_id)
        self.mask = torch.cat([cached, suffix_mask], dim=-1)  # (B, C + S)
        starts = torch.tensor([p for p, _ in found]).unsqueeze(-1)  # (B, 1)
        return self._forward(suffix_ids, starts + positions_of(suffix_mask), keep)  # (B, keep, V)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
        """Append one token to every row; returns the next-token log-probs.  tokens: (B,) -> (B, V)

        ``live`` (B,) bool: only these rows take their token; the others get a masked hole (their
        token is ignored, their position does not advance and their returned log-probs mean nothing).
        """
        if tokens.shape != (self.rows,):
            raise ValueError(f"step needs one token per row: shape ({self.rows},), got {tuple(tokens.shape)}")
        column = torch.ones_like(self.mask[:, :1]) if live is None else live.long().unsqueeze(-1)  # (B, 1)
        self.mask = torch.cat([self.mask, column], dim=-1)  # (B, T+1)
        positions = self.next_position.unsqueeze(-1)  # (B, 1)
        self.next_position = self.next_position + column.squeeze(-1)
        logits = self._forward(tokens.unsqueeze(-1).long(), positions)  # (B, 1, V)
        return torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B, V)

    def select(self, rows: Sequence[int]) -> None:
        """Keep (and reorder, or repeat) these rows, e.g. the parents of the new beams."""
        index = torch.tensor(list(rows), dtype=torch.long)  # (B',)
        self.cache.reorder_cache(index)
        self.mask = self.mask[index]  # (B', T)
        self.next_position = self.next_position[index]  # (B',)

    def snapshot(self, next_logprobs: torch.Tensor, rows: slice = slice(None)) -> PromptState:
        """A copy of the state after :meth:`prefill` (pass its result), for :func:`score_continuations`;
        ``rows``: only these rows (one member of a shared batch)."""
        kv = tuple((layer.keys[rows].clone(), layer.values[rows].clone()) for layer in self.cache.layers)
        return PromptState(kv, self.mask[rows].clone(), self.next_position[rows].clone(), next_logprobs)

    @torch.inference_mode()
    def extend(self, other: "LockstepBatch") -> None:
        """Append ``other``'s rows (both prefilled, same model) after this batch's own; the shorter
        history is padded on the left, which the mask hides. Copies both caches once."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        mine, theirs = width - self.mask.shape[1], width - other.mask.shape[1]
        mask = torch.cat([torch.nn.functional.pad(self.mask, (mine, 0)),
                          torch.nn.functional.pad(other.mask, (theirs, 0))])  # (B+B', T)
        next_position = torch.cat([self.next_position, other.next_position])  # (B+B',)
        rows = self.rows
        self.mask = mask
        self._load_cache(width, [[(list(range(rows)), a.keys, a.values), (list(range(rows, rows + other.rows)), b.keys,
                                   b.values)] for a, b in zip(self.cache.layers, other.cache.layers, strict=True)])
        self.next_position = next_position

    def _load_cache(self, width: int, layers: list[list[tuple[list[int], torch.Tensor, torch.Tensor]]]) -> None:
        """A new cache ``width`` long from pieces: per layer, (rows, keys, values) with keys and values
        (len(rows), H, t, D), right-aligned in time (the columns before them stay zeros, masked)."""
        self.cache = _new_cache(self.model)
        for layer, pieces in zip(self.cache.layers, layers, strict=True):
            first = pieces[0][1]  # (b, H, t, D)
            shape = (self.rows, first.shape[1], width, first.shape[3])
            keys, values = first.new_zeros(shape), first.new_zeros(shape)  # (B, H, width, D)
            for rows, k, v in pieces:
                keys[rows, :, width - k.shape[-2] :] = k
                values[rows, :, width - v.shape[-2] :] = v
            layer.update(keys, values)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, keep: int = 1) -> torch.Tensor:
        """The logits of the last ``keep`` columns (B, keep, V)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=keep,
            **{self._cache_kw: self.cache},
        )
        return out.logits  # (B, keep, V)


def last_token_logprobs(logits: torch.Tensor, prompts: Sequence[Sequence[int]], last: Sequence[int]) -> torch.Tensor:
    """Teacher forcing: log p(t_j | t_<j) of row r's last ``last[r]`` prompt tokens.

    logits: (B, m, V), the logits at each row's m positions before its last token (left-padded rows:
    the batch's last columns but one), m ≥ max(last); position i predicts the token after it.
    Returns (B, m), row r's log-probs in its last ``last[r]`` columns, oldest first, zeros before them.
    """
    rows, m = logits.shape[0], logits.shape[1]
    targets = torch.zeros((rows, m), dtype=torch.long)  # (B, m) the token each position predicts
    scored = torch.zeros((rows, m), dtype=torch.bool)  # (B, m)
    for row, (prompt, n) in enumerate(zip(prompts, last, strict=True)):
        if n:
            targets[row, m - n :] = torch.tensor(list(prompt[-n:]), dtype=torch.long)
            scored[row, m - n :] = True
    logits = logits.float()  # (B, m, V)
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, m)
    return torch.where(scored, chosen, torch.zeros_like(chosen))  # (B, m)


@torch.inference_mode()
def score_continuations(
    model: Any,
    state: PromptState,
    rows: Sequence[int],
    continuations: Sequence[Sequence[int]],
    pad_id: int,
    max_batch: int = 8,
) -> list[torch.Tensor]:
    """Teacher forcing: log p(c_j | prompt_row, c_<j) for every token of each continuation.

    Pair i is (prompt ``rows[i]``, ``continuations[i]``); returns one (len(c_i),) tensor per pair.
    Only the continuation tokens run through the model: the prompts' KV cache is reused.
    """
    if len(rows) != len(continuations):
        raise ValueError("score_continuations needs one row per continuation")
    out: list[torch.Tensor] = []
    for start in range(0, len(rows), max_batch):
        part = slice(start, start + max_batch)
        out.extend(_score_batch(model, state, list(rows[part]), list(continuations[part]), pad_id))
    return out


def _score_batch(
    model: Any, state: PromptState, rows: list[int], continuations: list[Sequence[int]], pad_id: int
) -> list[torch.Tensor]:
    index = torch.tensor(rows, dtype=torch.long)  # (P,)
    lengths = [len(c) for c in continuations]
    if min(lengths) < 1:
        raise ValueError("every continuation needs at least one token")
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (P, N), padded on the right
    cont_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (P, N)
    for i, cont in enumerate(continuations):
        ids[i, : len(cont)] = torch.tensor(list(cont), dtype=torch.long)
        cont_mask[i, : len(cont)] = 1
    cache = _new_cache(model, [(k[index], v[index]) for k, v in state.kv])
    mask = torch.cat([state.mask[index], cont_mask], dim=-1)  # (P, T+N)
    positions = state.next_position[index].unsqueeze(-1) + torch.arange(width)  # (P, N)
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{_cache_keyword(model): cache}
    ).logits  # (P, N, V)
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # (P, N, V)
    first = state.next_logprobs[index].gather(-1, ids[:, :1])  # (P, 1) log p(c_1 | prompt)
    later = logprobs[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (P, N-1) log p(c_j | .., c_<j)
    token_logprobs = torch.cat([first, later], dim=-1)  # (P, N)
    return [token_logprobs[i, :n] for i, n in enumerate(lengths)]


def can_extend(model: Any) -> bool:
    """Whether this model's decoding cache is all plain layers (what :meth:`LockstepBatch.extend`
    merges); sliding-window or other cache layers are not."""
    return all(type(layer) is type(_append_layer()) for layer in _new_cache(model).layers)


def _new_cache(model: Any, kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    """A KV cache; for decoding (no ``kv``) its plain layers append in place (:class:`_AppendLayer`)."""
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=kv, config=model.config)
    if kv is None:
        cache.layers = [_append_layer() if type(layer) is _dynamic_layer() else layer for layer in cache.layers]
    return cache


def _dynamic_layer() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


_APPEND_LAYER: type | None = None


def _append_layer() -> Any:
    """A ``DynamicLayer`` that writes each step's keys and values into spare capacity.

    ``DynamicLayer`` concatenates the whole cache at every step: a copy that grows with
    k x prompt length and took a fifth of a k = 5 decoding step here. This layer grows its
    buffers by half at a time and hands out views; other operations (row selection for beam
    search) run on the views and the result becomes the new buffer.
    """
    global _APPEND_LAYER
    if _APPEND_LAYER is None:
        base = _dynamic_layer()

        class AppendLayer(base):  # type: ignore[misc, valid-type]
            def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
                super().lazy_initialization(key_states, value_states)
                self._adopt()

            def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                end = self._used + key_states.shape[-2]
                if end > self._k.shape[-2]:
                    self._grow(end + max(64, end // 2), key_states, value_states)
                self._k[..., self._used : end, :] = key_states
                self._v[..., self._used : end, :] = value_states
                self._used = end
                self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
                return self.keys, self.values

            def _grow(self, capacity: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
                k = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))  # (B, H, C, D)
                v = value_states.new_empty((*value_states.shape[:-2], capacity, value_states.shape[-1]))  # (B, H, C, D)
                if self._used:
                    k[..., : self._used, :] = self._k[..., : self._used, :]
                    v[..., : self._used, :] = self._v[..., : self._used, :]
                self._k, self._v = k, v

            def _adopt(self) -> None:
                """Make the current (compact) keys and values the buffers."""
                self._k, self._v = self.keys, self.values
                self._used = self.keys.shape[-2] if self.keys is not None and self.keys.dim() == 4 else 0
                if self._used == 0:
                    self._k = self._v = torch.empty(0, 0, 0, 0)

            def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
                super().reorder_cache(beam_idx)
                self._adopt()

            def batch_select_indices(self, indices: torch.Tensor) -> None:
                super().batch_select_indices(indices)
                self._adopt()

            def batch_repeat_interleave(self, repeats: int) -> None:
                super().batch_repeat_interleave(repeats)
                self._adopt()

            def crop(self, tokens_to_remove: int) -> None:
                super().crop(tokens_to_remove)
                self._adopt()

        _APPEND_LAYER = AppendLayer
    return _APPEND_LAYER()


_CACHE_KEYWORDS: dict[type, str] = {}


def _cache_keyword(model: Any) -> str:
    """``cache`` in transformers >= 5.x, ``past_key_values`` before."""
    kind = type(model)
    if kind not in _CACHE_KEYWORDS:
        params = inspect.signature(model.forward).parameters
        _CACHE_KEYWORDS[kind] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KEYWORDS[kind]
