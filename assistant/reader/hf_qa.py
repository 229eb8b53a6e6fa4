"""A reader on any extractive question-answering model (``AutoModelForQuestionAnswering``: a start
and an end logit per token), the standard SQuAD-style decoding.

A long chunk is cut into windows of ``window_tokens`` (question + chunk piece) that overlap by
``stride`` tokens (the fast tokenizer's ``return_overflowing_tokens``); ``offset_mapping`` turns
token spans back into character offsets of the chunk. A span scores start_logit + end_logit;
a span seen in several windows keeps its best score; p(s | z, x) is the softmax of the scores over
every distinct span of the chunk up to ``max_answer_tokens`` long (REALM's reader distribution).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch

from knowledge.errors import ConfigError

from .base import SpanCandidate, candidate

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def span_logprobs(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context: torch.Tensor,
    offsets: torch.Tensor,
    max_answer_tokens: int,
    top: int,
) -> list[tuple[int, int, float]]:
    """The ``top`` spans of one chunk as (start_char, end_char, log p(s | z, x)), best first.

    score(s) = start_logit[first token] + end_logit[last token] over spans of context tokens at
    most ``max_answer_tokens`` long; the best score of a span over the windows that hold it;
    log p(s | z, x) = log softmax of the scores over all distinct spans.

    start_logits, end_logits: (W, T) for the W windows; context: (W, T) bool, True on chunk tokens;
    offsets: (W, T, 2) character offsets of each token in the chunk.
    """
    w, t = start_logits.shape
    scores = start_logits.float().unsqueeze(-1) + end_logits.float().unsqueeze(-2)  # (W, T, T) [w, first, last]
    first = torch.arange(t).unsqueeze(-1)  # (T, 1)
    last = torch.arange(t).unsqueeze(0)  # (1, T)
    ordered = (last >= first) & (last - first < max_answer_tokens)  # (T, T)
    start_char = offsets[..., 0].long()  # (W, T)
    end_char = offsets[..., 1].long()  # (W, T)
    valid = ordered.unsqueeze(0) & context.unsqueeze(-1) & context.unsqueeze(-2)  # (W, T, T)
    valid &= end_char.unsqueeze(-2) > start_char.unsqueeze(-1)  # (W, T, T) non-empty text
    if not bool(valid.any()):
        return []
    width = int(end_char.max()) + 1
    keys = start_char.unsqueeze(-1) * width + end_char.unsqueeze(-2)  # (W, T, T) one key per char span
    spans, index = torch.unique(keys[valid], return_inverse=True)  # (N,), (M,) over the M valid (w, first, last)
    best = torch.full((spans.numel(),), -math.inf).scatter_reduce(0, index, scores[valid], reduce="amax")  # (N,)
    logprobs = torch.log_softmax(best, dim=0)  # (N,)
    values, order = logprobs.topk(min(top, spans.numel()))
    return [(int(spans[i]) // width, int(spans[i]) % width, float(v)) for v, i in zip(values.tolist(), order.tolist())]


class HFQAReader:
    """Reader over an ``AutoModelForQuestionAnswering`` and its fast tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, max_answer_tokens: int = 16, window_tokens: int = 384,
                 stride: int = 128, top_spans: int = 20, max_batch: int = 8) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("the question-answering reader needs a fast tokenizer (offset mapping): use a model with tokenizer.json")
        if not 0 <= stride < window_tokens:
            raise ValueError("stride must be >= 0 and below window_tokens")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_answer_tokens = max_answer_tokens
        self.window_tokens = window_tokens
        self.stride = stride
        self.top_spans = top_spans
        self.max_batch = max_batch
        self.question_first = tokenizer.padding_side == "right"  # XLNet-style models put the context first

    @classmethod
    def from_pretrained(cls, name: str, **settings: Any) -> "HFQAReader":
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForQuestionAnswering.from_pretrained(name, dtype="float32")
        except (OSError, ValueError) as exc:
            offline = " (HF_HUB_OFFLINE=1: only models already on disk load)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise ConfigError(
                f"cannot load the reader {name!r}{offline}: {exc}. Set reader under [answer.realm] to \"generator\" "
                "(the packaged generator reads the chunks) or to a downloaded question-answering model id or dir"
            ) from None
        return cls(model, tokenizer, **settings)

    def with_settings(self, **settings: Any) -> "HFQAReader":
        """A reader on the same loaded model with other span and window settings (nothing reloads)."""
        return type(self)(self.model, self.tokenizer, **{"top_spans": self.top_spans, "max_batch": self.max_batch,
                                                          **settings})

    def read(self, question: str, chunk_texts: Sequence[str]) -> list[tuple[SpanCandidate, ...]]:
        question = self._shortened(question)
        return [self._read_one(question, text) if text.strip() else () for text in chunk_texts]

    def _read_one(self, question: str, text: str) -> tuple[SpanCandidate, ...]:
        enc = self._windows(question, text)
        context_id = 1 if self.question_first else 0
        context = torch.tensor(
            [[sid == context_id for sid in enc.sequence_ids(i)] for i in range(enc["input_ids"].shape[0])]
        )  # (W, T)
        start, end = self._logits(enc)  # (W, T), (W, T)
        spans = span_logprobs(start, end, context, enc["offset_mapping"], self.max_answer_tokens, self.top_spans)
        return tuple(candidate(text, s, e, lp) for s, e, lp in spans)

    def _windows(self, question: str, text: str) -> Any:
        pair = (question, text) if self.question_first else (text, question)
        return self.tokenizer(
            *pair,
            truncation="only_second" if self.question_first else "only_first",
            max_length=self.window_tokens,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="longest",
            return_tensors="pt",
        )

    @torch.inference_mode()
    def _logits(self, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {name: enc[name] for name in MODEL_INPUTS if name in enc}
        starts, ends = [], []
        for i in range(0, inputs["input_ids"].shape[0], self.max_batch):
            out = self.model(**{name: value[i : i + self.max_batch] for name, value in inputs.items()})
            starts.append(out.start_logits)  # (B, T)
            ends.append(out.end_logits)  # (B, T)
        return torch.cat(starts), torch.cat(ends)  # (W, T), (W, T)

    def _shortened(self, question: str) -> str:
        """The question cut to half a window, so that every window keeps room for the chunk."""
        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        limit = self.window_tokens // 2
        return question if len(ids) <= limit else self.tokenizer.decode(ids[:limit])
