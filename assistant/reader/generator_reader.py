"""The offline default reader: the packaged generator reads each chunk (no extractive QA model is
packaged anywhere on PyPI).

For each chunk z: (1) the generator answers the question from z alone (greedy; all k chunks in
one batch; a row stops once its first statement is complete); (2) that statement is aligned to
the best-matching spans of z (:mod:`.align`: the question's own words dropped first); (3) each
span s is scored under the generator by teacher forcing, as the whole answer to the same prompt:

    p(s | z, x) = Π_i p(s_i | prompt(z, x), s_<i) · p(<end> | prompt(z, x), s),

the probability that the generator answers exactly s. Text that is not a span of z gets
p = 0 (it is never a candidate), so the answer is always verbatim text of a chunk. The
probability is not renormalised over the spans of z: mass the generator puts on answers that
are not in z stays off every span, which is what the "no answer" threshold looks at.
"""

from __future__ import annotations

from typing import Sequence

from knowledge.errors import ConfigError

from ..decoding import beam_search, single_row
from ..generator import Generator
from ..lockstep import LockstepBatch, PromptState, score_continuations
from ..prompts import messages
from .align import AlignedSpan, aligned_spans, first_statement
from .base import SpanCandidate, candidate

READER_PROMPT = (
    "You answer questions using the given context. Reply with only the answer: a few words "
    "copied exactly from the context, not a sentence."
)


class GeneratorReader:
    """Reader on a causal chat LM: generate, align to spans of the chunk, score the spans."""

    def __init__(self, generator: Generator, max_answer_tokens: int = 16, chunk_chars: int = 2000,
                 spans_per_chunk: int = 3, system_prompt: str = READER_PROMPT, generate_tokens: int = 64) -> None:
        self.generator = generator
        self.max_answer_tokens = max_answer_tokens  # longest span, in words
        self.generate_tokens = generate_tokens  # the free answer that is aligned (often a whole sentence)
        self.chunk_chars = chunk_chars
        self.spans_per_chunk = spans_per_chunk
        self.system_prompt = system_prompt
        tok = generator.tokenizer
        self.end_id = tok.eos_token_id if tok.eos_token_id in generator.eos_ids else min(generator.eos_ids)

    def read(self, question: str, chunk_texts: Sequence[str]) -> list[tuple[SpanCandidate, ...]]:
        shown = [text[: self.chunk_chars] for text in chunk_texts]
        rows = [z for z, text in enumerate(shown) if text.strip()]
        if not rows:
            return [() for _ in chunk_texts]
        prompts = [self._prompt(question, shown[z]) for z in rows]
        answers, state = self.generate(prompts, question)
        spans = {z: self._best_aligned(answer, question, shown[z]) for z, answer in zip(rows, answers)}
        return self._scored(shown, rows, spans, state)

    def generate(self, prompts: Sequence[Sequence[int]], question: str) -> tuple[list[str], PromptState]:
        """The generator's greedy answer to each prompt (one batch), each stopped once its first
        statement is complete, and the state after the prompts."""
        gen = self.generator
        batch = LockstepBatch(gen.model, prompts, gen.pad_id)
        first = batch.prefill()  # (P, V)
        state = batch.snapshot(first)

        def stated(ids: Sequence[int]) -> bool:
            statement = first_statement(gen.decode(list(ids)), question)
            return statement is not None and statement[1]

        groups = beam_search(batch, first, single_row, len(prompts), 1, gen.eos_ids, self.generate_tokens, stated)
        return [gen.decode([s.token_id for s in hyps[0].answer_steps]) for hyps in groups], state

    def _best_aligned(self, answer: str, question: str, text: str) -> list[AlignedSpan]:
        """The spans that match the answer best (ties of the best F1: the same words in several places)."""
        spans = aligned_spans(answer, question, text, self.max_answer_tokens, self.spans_per_chunk)
        return [s for s in spans if s.f1 == spans[0].f1]

    def _scored(self, shown: list[str], rows: list[int], spans: dict[int, list[AlignedSpan]],
                state: PromptState) -> list[tuple[SpanCandidate, ...]]:
        """Teacher-forced log p(s | z, x) of every aligned span (its tokens, then the end token)."""
        tok = self.generator.tokenizer
        pairs = [(z, span) for z in rows for span in spans[z]]
        conts = [list(tok(shown[z][s.start : s.end], add_special_tokens=False)["input_ids"]) + [self.end_id] for z, s in pairs]
        scores = score_continuations(self.generator.model, state, [rows.index(z) for z, _ in pairs], conts, self.generator.pad_id)
        out: list[list[SpanCandidate]] = [[] for _ in shown]
        for (z, span), token_logprobs in zip(pairs, scores):
            out[z].append(candidate(shown[z], span.start, span.end, float(token_logprobs.sum())))
        return [tuple(spans_of_chunk) for spans_of_chunk in out]

    def _prompt(self, question: str, text: str) -> list[int]:
        ids = self.generator.render(messages(self.system_prompt, (), question, text))
        budget = self.generator.context_tokens - self.generate_tokens
        if len(ids) > budget:
            raise ConfigError(
                f"the question with a chunk needs {len(ids)} tokens, but the generator's context leaves {budget}: "
                "lower answer.chunk_chars or answer.max_new_tokens"
            )
        return ids
