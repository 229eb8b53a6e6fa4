"""Token-by-token decoding of the RAG-Token mixture over a set of prompts, with final token texts.

With a single prompt (prior log 1 = 0) the mixture is the plain LM: the closed-book and concat
baselines decode through this same path, so the comparison is like for like.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterator, Sequence

import torch

from ..config import AnswerConfig
from ..copying import copy_continuations, copy_token_ids
from ..decoding import (Choose, Combine, Contrast, Shortlist, TokenStep, WordEnds, argmax_choice, beam_search, greedy,
                        grounded_mixture, mixture)
from ..generator import Generator
from ..lockstep import LockstepBatch
from ..quotes import Quotable, quoted_argmax, quoted_top, routed_scores, value_contrast
from ..refusals import answer_refusals, refusing, refusing_shortlist
from ..text_stream import TokenTexts


def stream_mixture(
    generator: Generator, prompts: Sequence[Sequence[int]], doc_logprior: torch.Tensor, config: AnswerConfig,
    beam_size: int = 1, *, question: str = "",
) -> Iterator[tuple[TokenStep, str]]:
    """Decode p(y_i|x,y_<i) = Σ_z p(z|x) p(y_i|x,z,y_<i) with the k prompts in one batch.

    Yields (step, text) for each answer token once its text is final. Greedy (beam_size 1)
    streams as it decodes; beam search (``beam_size`` > 1) yields the best hypothesis when the search is over.
    prompts: k token lists; doc_logprior: (k,); question: what the answer answers (for
    ``config.refuse_echoes``; "" = unknown, the rule off).
    """
    if len(prompts) != doc_logprior.shape[0]:
        raise ValueError(f"{len(prompts)} prompts but {doc_logprior.shape[0]} prior values")
    yield from _decode(generator, prompts, mixture(doc_logprior), config, beam_size, question=question)


def stream_grounded(
    generator: Generator, prompts: Sequence[Sequence[int]], doc_logprior: torch.Tensor, config: AnswerConfig,
    beam_size: int = 1, quotable: Quotable | None = None, *, prefilled: tuple[Any, torch.Tensor] | None = None,
    question: str = "",
) -> Iterator[tuple[TokenStep, str]]:
    """Like :func:`stream_mixture`, with the null document as the last prompt (k + 1 prompts for a
    (k,) prior): each chunk's distribution is contrasted with it as ``config`` says
    (context-aware decoding), and every step's ``row_logprobs`` ends with log p(y_i|x,∅,y_<i).
    ``prefilled``: (the :func:`decoding_batch` of these prompts, what its prefill returned (k + 1, V)),
    when the caller ran the prefill (RAG-Token reranks the prior by it); the caller closes the batch.
    With ``config.quote_penalty`` > 0, greedy decoding states only the names and numbers
    ``quotable`` admits (the retrieved chunks' and the question's, :mod:`assistant.quotes`)."""
    if len(prompts) != doc_logprior.shape[0] + 1:
        raise ValueError(f"{len(prompts)} prompts for {doc_logprior.shape[0]} prior values: the null prompt comes last")
    yield from _decode(generator, prompts, grounded_mixture(doc_logprior, contrast_of(config)), config, beam_size,
                       prefilled=prefilled, quotable=quotable, doc_logprior=doc_logprior, question=question)


def decoding_batch(generator: Generator, prompts: Sequence[Sequence[int]], beam_size: int = 1) -> Any:
    """The batch these prompts decode in (use it in a ``with`` block). Greedy: the rows may share
    forward passes with other answers' (the server); beam search re-selects rows every step, a copy
    of the whole cache, so it keeps a batch of its own."""
    if beam_size == 1:
        return generator.lockstep(prompts)
    return LockstepBatch(generator.model, prompts, generator.pad_id)


def beam_shortlist(generator: Generator, quotable: Quotable | None, config: AnswerConfig,
                   question: str) -> Shortlist | None:
    """Beam search's candidates: under the quote constraint (:func:`quote_shortlist`), without the tokens
    the refusals refuse (:mod:`assistant.refusals`); None = each beam's plain best ones."""
    return refusing_shortlist(quote_shortlist(generator, quotable, config), generator.decode, generator.eos_ids,
                              answer_refusals(config, question))


def quote_shortlist(generator: Generator, quotable: Quotable | None, config: AnswerConfig) -> Shortlist | None:
    """Beam search's candidates under the quote constraint (``config.quote_penalty`` > 0), else None."""
    if quotable is None or config.quote_penalty <= 0:
        return None
    pieces, eos = generator.token_pieces, generator.eos_ids

    def shortlist(ids: Sequence[int], scores: torch.Tensor, n: int) -> list[tuple[int, float]]:
        return quoted_top(scores, generator.decode(ids), pieces, quotable, config.quote_penalty, eos, n,
                          config.quote_focus_penalty)

    return shortlist


def quote_choice(generator: Generator, quotable: Quotable, config: AnswerConfig,
                 doc_logprior: torch.Tensor | None = None) -> Choose:
    """Greedy's choice with unquoted names and numbers costing ``config.quote_penalty`` nats (0: the
    argmax), and within names and numbers the contrast with the null document (the last row) of
    ``config.quote_contrast`` (:func:`assistant.quotes.value_contrast`). Given the chunks' prior
    (k > 1) and plain mixing (no ``context_weight`` contrast), a new name is chosen from the mixture
    re-weighted by ``config.quote_routing`` (:func:`assistant.quotes.routed_scores`). Beam search ranks the
    shortlists of :func:`quote_shortlist` instead (without the contrast or the routing)."""
    if config.quote_penalty <= 0:
        return argmax_choice
    pieces, eos = generator.token_pieces, generator.eos_ids

    def encode(text: str) -> list[int]:
        return generator.tokenizer(text, add_special_tokens=False)["input_ids"]

    routing = config.quote_routing if doc_logprior is not None and doc_logprior.shape[0] > 1 and not contrast_of(
        config).active else 0.0

    def choose(ids: Sequence[int], scores: torch.Tensor, row_logprobs: torch.Tensor) -> int:
        before = generator.decode(ids)
        if routing > 0:
            scores = routed_scores(scores, row_logprobs, doc_logprior, before, pieces, quotable, routing)
        if config.copy_bonus > 0 and quotable.sentences:
            copied = copy_token_ids(copy_continuations(before, quotable.sentences, config.copy_min_chars), encode)
            if copied:
                scores = scores.clone()
                scores[copied] += config.copy_bonus
        token = quoted_argmax(scores, before, pieces, quotable, config.quote_penalty, eos, config.quote_focus_penalty)
        if config.quote_contrast <= 0 or token in eos:
            return token
        return value_contrast(scores, row_logprobs[-1], token, before, pieces, quotable, config.quote_contrast,
                              config.quote_plausibility, config.quote_conflict)

    return choose


def contrast_of(config: AnswerConfig) -> Contrast:
    return Contrast(config.context_weight, config.context_weight_adaptive, config.plausibility, config.context_contrast,
                    config.context_penalty_only, config.context_conflict)


def _decode(
    generator: Generator, prompts: Sequence[Sequence[int]], combine: Combine, config: AnswerConfig, beam_size: int,
    *, prefilled: tuple[Any, torch.Tensor] | None = None, quotable: Quotable | None = None,
    doc_logprior: torch.Tensor | None = None, question: str = "",
) -> Iterator[tuple[TokenStep, str]]:
    """``quotable``: the names and numbers the answer may state (``config.quote_penalty``), or None;
    ``doc_logprior``: the chunks' (k,) prior, for the routing at names (greedy); ``question``: for the
    refusals (:mod:`assistant.refusals`)."""
    batch, first = prefilled or (decoding_batch(generator, prompts, beam_size), None)
    if beam_size == 1:
        choose = quote_choice(generator, quotable, config, doc_logprior) if quotable is not None else argmax_choice
        choose = refusing(choose, generator.decode, generator.eos_ids, answer_refusals(config, question))
        with nullcontext(batch) if prefilled else batch:
            yield from with_texts(generator, greedy(batch, combine, generator.eos_ids, config.max_new_tokens, choose,
                                                    first_logprobs=first, words=WordEnds(generator.decode),
                                                    finish_word_tokens=config.finish_word_tokens), config.stop)
        return
    groups = beam_search(
        batch, batch.prefill() if first is None else first, combine, 1, beam_size, generator.eos_ids, config.max_new_tokens,
        stop_check(generator, config.stop), config.length_penalty, beam_shortlist(generator, quotable, config, question),
    )
    yield from with_texts(generator, iter(groups[0][0].answer_steps), config.stop)


def with_texts(generator: Generator, steps: Iterator[TokenStep], stop: Sequence[str]) -> Iterator[tuple[TokenStep, str]]:
    """Pair each step with its text; stop pulling steps at the first stop string."""
    texts = TokenTexts(generator.decode, stop)
    seen: list[TokenStep] = []
    for step in steps:
        seen.append(step)
        for piece in texts.push(step.token_id):
            yield seen[piece.index], piece.text
        if texts.stopped:
            return
    for piece in texts.finish():
        yield seen[piece.index], piece.text


def stop_check(generator: Generator, stop: Sequence[str]) -> Callable[[Sequence[int]], bool]:
    """Whether decoded ids contain a stop string (for beam search)."""
    if not stop:
        return lambda ids: False
    return lambda ids: any(s in generator.decode(ids) for s in stop)
