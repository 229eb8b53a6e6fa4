"""Datastore keys: the generator's input to its last feed-forward block, after that layer's norm.

A forward pre-hook on ``model.model.layers[-1].mlp`` sees exactly that tensor (in Llama-style
decoders the MLP is called on ``post_attention_layernorm(h)``). The hook keeps each thread's last
call apart, so a datastore being built in the background and an answer being decoded can share
one model.

Long token sequences are encoded in overlapping windows (:func:`windows`): each window of
``context`` tokens contributes keys for its last ``stride`` positions, so every key but the
first window's sees at least ``context - stride`` tokens before it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from knowledge.errors import ConfigError


def key_module(model: Any) -> torch.nn.Module:
    """The last decoder layer's feed-forward block (``model.model.layers[-1].mlp``)."""
    try:
        return model.model.layers[-1].mlp
    except (AttributeError, IndexError, TypeError):
        raise ConfigError(
            f"the kNN-LM mode needs a decoder whose layers are model.model.layers[i].mlp (Llama, Mistral, "
            f"Qwen, SmolLM...); {type(model).__name__} has none: use such a generator or another mode"
        ) from None


def key_size(model: Any) -> int:
    return int(model.config.hidden_size)


class KeyCapture:
    """``with KeyCapture(model) as cap: model(...)`` — then ``cap.keys`` is (B, T, D) of the last call
    made by the current thread (calls from other threads are kept apart)."""

    def __init__(self, model: Any) -> None:
        self.module = key_module(model)
        self._by_thread: dict[int, torch.Tensor] = {}
        self._handle: Any = None

    def __enter__(self) -> "KeyCapture":
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        self._by_thread[threading.get_ident()] = x.detach().float()  # (B, T, D)

    @property
    def keys(self) -> torch.Tensor:
        keys = self._by_thread.get(threading.get_ident())
        if keys is None:
            raise RuntimeError("no forward pass ran in this thread inside this KeyCapture")
        return keys

    def last(self) -> torch.Tensor:
        """The keys of the last position of each row of the last call.  Returns (B, D)."""
        return self.keys[:, -1]  # (B, T, D) -> (B, D)


@dataclass(frozen=True)
class Window:
    """Run ``ids[start:end]``; keep the keys of positions ``first .. end - 2`` (absolute), whose next
    tokens ``first + 1 .. end - 1`` are the values."""

    start: int
    end: int
    first: int

    @property
    def kept(self) -> int:
        return self.end - 1 - self.first


def windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Windows over ``n_tokens`` ids that give every position 0 .. n-2 exactly one key."""
    if not 1 <= stride <= context - 1:
        raise ValueError(f"need 1 <= stride < context, got stride {stride}, context {context}")
    out: list[Window] = []
    first = 0
    while first < n_tokens - 1:
        end = min(n_tokens, context if first == 0 else first + stride + 1)
        out.append(Window(max(0, end - context), end, first))
        first = end - 1
    return out


@dataclass(frozen=True)
class Encoded:
    """Keys of consecutive positions of one token sequence, with the tokens that follow them and,
    when asked for, the LM's log-probability of those tokens."""

    positions: torch.Tensor  # (n,) absolute positions p; the value is ids[p + 1]
    keys: torch.Tensor  # (n, D) float32
    values: torch.Tensor  # (n,) long, ids[p + 1]
    lm_logprobs: torch.Tensor | None  # (n,) log p_LM(ids[p + 1] | ids[..p]), or None


@torch.inference_mode()
def encode(model: Any, ids: Sequence[int], context: int, stride: int, with_logprobs: bool = False) -> Iterator[Encoded]:
    """Keys (and optionally LM log-probs) for every position of ``ids`` but the last, window by window."""
    tokens = torch.tensor(list(ids), dtype=torch.long)  # (N,)
    for w in windows(len(tokens), context, stride):
        window = tokens[w.start : w.end].unsqueeze(0)  # (1, L)
        keep = slice(w.first - w.start, w.end - 1 - w.start)  # local positions of the kept keys
        with KeyCapture(model) as cap:
            if with_logprobs:
                logits = model(input_ids=window, logits_to_keep=w.end - w.first).logits[0, :-1]  # (n, V)
            else:
                _base(model)(input_ids=window)
        values = tokens[w.first + 1 : w.end]  # (n,)
        lm = None
        if with_logprobs:
            lm = torch.log_softmax(logits.float(), dim=-1).gather(-1, values.unsqueeze(-1)).squeeze(-1)  # (n,)
        keys = cap.keys[0, keep]  # (n, D)
        yield Encoded(torch.arange(w.first, w.end - 1), keys, values, lm)


@torch.inference_mode()
def encode_batch(model: Any, sequences: Sequence[Sequence[int]], pad_id: int) -> list[torch.Tensor]:
    """Keys (len(s) - 1, D) of every position but the last of each short sequence, in one padded pass
    (right padding: a causal model's real positions never see it)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, L)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[row, : len(s)] = 1
    with KeyCapture(model) as cap:
        _base(model)(input_ids=ids, attention_mask=mask)
    return [cap.keys[row, : len(s) - 1] for row, s in enumerate(sequences)]  # each (len(s) - 1, D)


def _base(model: Any) -> Any:
    """The decoder without its LM head: keys do not need the (T, V) logits."""
    return getattr(model, "model", model)
