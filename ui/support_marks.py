"""Which words of an answer the page and the terminal mark as coming from the model's memory.

Works on the JSON form of an answer's tokens (``TokenProvenance.to_json()``), so the page, the
terminal and API clients read the same thing. A token's ``support`` (see ``assistant.answer.Support``)
says whether a retrieved chunk made it markedly more likely than the model alone ("document") or
none did ("model"), and whether it belongs to a content word (a name, a number, a date — not "the",
"was" or punctuation). Tokens of older answers have no ``support``: nothing is marked and there is
no summary.

Content words are grouped like ``assistant.support.content_word_labels``: a run of content tokens
with no whitespace between them is one word, and a word is supported only if all of it is. Adjacent
unsupported words ("Jomo Kenyatta") form one *marked run*, so a phrase carries one mark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MEMORY_NOTE = "from the model's memory, not found in your documents"


def support_of(token: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The token's support label, or ``None`` for tokens without one (older answers)."""
    s = token.get("support")
    return s if isinstance(s, Mapping) and s.get("label") in ("document", "model") else None


def is_content(token: Mapping[str, Any]) -> bool:
    s = support_of(token)
    return s is not None and bool(s.get("content")) and bool(str(token.get("text", "")).strip())


@dataclass(frozen=True)
class Word:
    """Content word ``tokens[first:last + 1]``; ``supported`` when every token of it is "document"."""

    first: int
    last: int
    supported: bool


@dataclass(frozen=True)
class SupportSummary:
    """How many of an answer's content words its documents support."""

    supported: int
    total: int

    @property
    def unsupported(self) -> int:
        return self.total - self.supported

    def line(self, marker: str = "?") -> str:
        """"N of M content words supported by your documents; marked ? came from the model's memory"."""
        if self.total == 0:
            return "No content words to check against your documents"
        text = f"{self.supported} of {self.total} content word{'s' if self.total != 1 else ''} supported by your documents"
        if self.unsupported:
            text += f"; marked {marker} came from the model's memory"
        return text


def content_words(tokens: Sequence[Mapping[str, Any]]) -> list[Word]:
    words: list[Word] = []
    previous_content = False
    for i, t in enumerate(tokens):
        content = is_content(t)
        if content:
            supported = support_of(t)["label"] == "document"  # type: ignore[index]
            if not previous_content or str(t.get("text", ""))[:1].isspace():
                words.append(Word(i, i, supported))
            else:
                w = words[-1]
                words[-1] = Word(w.first, i, w.supported and supported)
        previous_content = content
    return words


def marked_runs(tokens: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(first, last) token indices of each run of adjacent unsupported content words; only
    whitespace may lie between the words of a run."""
    runs: list[tuple[int, int]] = []
    for w in content_words(tokens):
        if w.supported:
            continue
        if runs and all(not str(tokens[j].get("text", "")).strip() for j in range(runs[-1][1] + 1, w.first)):
            runs[-1] = (runs[-1][0], w.last)
        else:
            runs.append((w.first, w.last))
    return runs


def support_summary(tokens: Sequence[Mapping[str, Any]]) -> SupportSummary | None:
    """``None`` when no token carries a support label (an answer made before they existed)."""
    if not any(support_of(t) is not None for t in tokens):
        return None
    words = content_words(tokens)
    return SupportSummary(sum(w.supported for w in words), len(words))


def settled_count(tokens: Sequence[Mapping[str, Any]]) -> int:
    """While an answer streams: how many leading tokens can be shown with their final marks. The
    trailing content tokens (and whitespace among them) may still be joined by the next token into
    one word or one marked run, so they wait."""
    n = len(tokens)
    while n > 0 and (is_content(tokens[n - 1]) or not str(tokens[n - 1].get("text", "")).strip()):
        n -= 1
    return n


def terminal_text(tokens: Sequence[Mapping[str, Any]], start: int = 0, end: int | None = None,
                  tty: bool = False) -> str:
    """Tokens ``start:end`` as terminal text, unsupported runs marked: on a terminal underlined
    and followed by a bold "?", elsewhere as ``[?Jomo Kenyatta]``. ``start`` and ``end`` must not
    cut through a marked run (stream with :func:`settled_count`)."""
    end = len(tokens) if end is None else end
    starts = {a: b for a, b in marked_runs(tokens)}
    out, i = [], start
    while i < end:
        if i in starts:
            last = starts[i]
            text = "".join(str(t.get("text", "")) for t in tokens[i : last + 1])
            body = text.lstrip()
            lead = text[: len(text) - len(body)]
            out.append(f"{lead}\x1b[4m{body}\x1b[24m\x1b[1m?\x1b[22m" if tty else f"{lead}[?{body}]")
            i = last + 1
        else:
            out.append(str(tokens[i].get("text", "")))
            i += 1
    return "".join(out)
