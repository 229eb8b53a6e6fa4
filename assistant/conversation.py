"""The conversation so far, and the standalone retrieval query of a follow-up question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

ROLES = ("user", "assistant")
ANSWER_CHARS_IN_QUERY = 300  # an earlier answer contributes at most this much to the retrieval query


@dataclass(frozen=True)
class Turn:
    """One message of the conversation: ``role`` is "user" or "assistant"."""

    role: str
    text: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f'Turn.role = "{self.role}": use "user" or "assistant"')


# Words that point back into the conversation: a question holding one is not standalone.
REFERRING_WORDS = frozenset(
    "he she it they him her his hers its their theirs them this that these those there then such "
    "former latter same other else also too".split()
)
FOLLOW_UP_OPENERS = ("and ", "but ", "what about", "how about", "what else", "why not", "so ")


def is_follow_up(question: str) -> bool:
    """True when a question leans on what came before: it refers back ("where was *she* born?"),
    opens elliptically ("and the second one?"), or is too short to stand alone ("why?")."""
    words = [w.strip(".,;:!?\"'()").lower() for w in question.split()]
    words = [w for w in words if w]
    if len(words) <= 2:
        return True
    lowered = question.strip().lower()
    return any(w in REFERRING_WORDS for w in words) or lowered.startswith(FOLLOW_UP_OPENERS)


def retrieval_query(question: str, history: Sequence[Turn], exchanges: int = 1) -> str:
    """The text to retrieve with. For a follow-up (:func:`is_follow_up`): the last ``exchanges``
    exchanges (question and answer) before the new question, so "where was she born?" still finds
    the document about "her"; a standalone question is retrieved on its own, so a change of
    subject is not dragged back to the previous document.

    The new question comes last and in full; earlier answers are cut to a few hundred characters.
    Rewriting the question with the generator was not used: the packaged 135M model does not
    rewrite reliably, and a wrong rewrite loses the question, while extra context words only
    dilute it.
    """
    if exchanges <= 0 or not history or not is_follow_up(question):
        return question
    earlier = _last_exchanges(history, exchanges)
    parts = [t.text if t.role == "user" else t.text[:ANSWER_CHARS_IN_QUERY] for t in earlier]
    return "\n".join([*parts, question])


def _last_exchanges(history: Sequence[Turn], exchanges: int) -> list[Turn]:
    starts = [i for i, t in enumerate(history) if t.role == "user"]
    first = starts[-exchanges] if len(starts) >= exchanges else 0
    return list(history[first:])


def cut_points(history: Sequence[Turn]) -> list[int]:
    """Where the kept history may start, longest first: 0, each later user turn, and the end
    (no history). Dropping whole exchanges keeps the history starting with a question."""
    return [0] + [i for i, t in enumerate(history) if t.role == "user" and i > 0] + [len(history)]
