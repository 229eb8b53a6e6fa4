"""Chat prompts: one per retrieved chunk (RAG), all chunks at once (concat) or none (closed book),
with as much recent history as the generator's context holds."""

from __future__ import annotations

from typing import Sequence

from knowledge.errors import ConfigError
from knowledge.types import Hit

from .config import AnswerConfig
from .conversation import Turn, cut_points
from .focus import focus_by_text
from .generator import Generator


FOCUS_LABEL = "Most relevant:"  # before a chunk's focus sentences, restated after it (answer.context_focus)


def chunk_context(hit: Hit, chunk_chars: int, focus: Sequence[str] = ()) -> str:
    """A chunk as prompt context: its heading path, its text cut to ``chunk_chars``, then ``focus``
    (its sentences the question points to) restated after a blank line, cut to ``chunk_chars`` too
    (a chunk's prompt is at most about twice as long as without it)."""
    chunk = hit.chunk
    heading = " > ".join(chunk.heading_path)
    text = chunk.text[:chunk_chars]
    if focus:
        text += f"\n\n{FOCUS_LABEL} " + " ".join(focus)[:chunk_chars]
    return f"{heading}\n{text}" if heading else text


def chunk_contexts(hits: Sequence[Hit], question: str, config: AnswerConfig) -> list[str]:
    """Each chunk as prompt context, with its focus restated when ``answer.context_focus`` is on
    (the focus of ``question`` over all the chunks, :func:`assistant.focus.focus_by_text`)."""
    if not config.context_focus:
        return [chunk_context(h, config.chunk_chars) for h in hits]
    focus = focus_by_text(question, [h.chunk.text for h in hits], config.quote_focus_ratio)
    return [chunk_context(h, config.chunk_chars, f) for h, f in zip(hits, focus)]


def concat_context(hits: Sequence[Hit], question: str, config: AnswerConfig) -> str:
    """Every chunk in one context, as :func:`chunk_contexts` makes them, numbered in retrieval order."""
    return "\n\n".join(f"[{i}] {c}" for i, c in enumerate(chunk_contexts(hits, question, config), start=1))


def messages(system_prompt: str, history: Sequence[Turn], question: str, context: str | None) -> list[dict[str, str]]:
    """System message, earlier turns as they were, then the question with its context."""
    out = [{"role": "system", "content": system_prompt}] if system_prompt else []
    out += [{"role": t.role, "content": t.text} for t in history]
    content = question if context is None else f"Context:\n{context}\n\nQuestion: {question}"
    out.append({"role": "user", "content": content})
    return out


def build_prompts(
    generator: Generator,
    question: str,
    history: Sequence[Turn],
    contexts: Sequence[str | None],
    config: AnswerConfig,
) -> list[list[int]]:
    """Token ids of one prompt per context. The oldest exchanges are dropped until the longest
    prompt plus the answer's tokens (``max_new_tokens``, and ``finish_word_tokens`` to finish its last word)
    fits the generator's context."""
    answer_tokens = config.max_new_tokens + config.finish_word_tokens
    budget = generator.context_tokens - answer_tokens

    def render(start: int) -> list[list[int]]:
        kept = history[start:]
        return [generator.render(messages(config.system_prompt, kept, question, c)) for c in contexts]

    cuts = cut_points(history)
    lo, hi = 0, len(cuts) - 1  # prompts shrink as the cut moves right; invariant: cuts[hi] fits
    best = render(cuts[hi])
    if max(map(len, best)) > budget:
        raise ConfigError(
            f"the question with its context needs {max(map(len, best))} tokens, but the generator's context "
            f"leaves {budget} ({generator.context_tokens} minus {answer_tokens} for the answer: answer.max_new_tokens "
            f"= {config.max_new_tokens} and answer.finish_word_tokens = {config.finish_word_tokens}): "
            "shorten the question, or lower answer.chunk_chars or answer.max_new_tokens"
        )
    while lo < hi:
        mid = (lo + hi) // 2
        prompts = render(cuts[mid])
        if max(map(len, prompts)) <= budget:
            best, hi = prompts, mid
        else:
            lo = mid + 1
    return best  # the prompts of cuts[hi]
