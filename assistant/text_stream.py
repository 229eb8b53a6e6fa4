"""Generated token ids to text, one piece per token, with stop strings.

The pieces of the released tokens always concatenate to the answer text. A token is held back
while the text could still be the start of a stop string, so a streaming client never shows
text that a stop string later removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Piece:
    """The final text of the generated token at ``index`` (0-based among the generated tokens)."""

    index: int
    text: str


class TokenTexts:
    """Feed token ids one at a time with :meth:`push`; it returns the pieces that became final."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._decoded = ""  # decode(ids) at the last complete character
        self._pieces: list[str] = []
        self._released = 0
        self.stopped = False  # a stop string was found: the text is final, push no more

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def push(self, token_id: int) -> list[Piece]:
        if self.stopped:
            raise ValueError("a stop string already ended this text")
        self._ids.append(token_id)
        self._pieces.append(self._next_piece(token_id))
        text = self.text
        cut = self._stop_position(text)
        if cut is not None:
            self.stopped = True
            self._cut_at(cut)
            return self._release(len(self._pieces))
        return self._release(self._safe_count(len(text) - self._held_back(text)))

    def finish(self) -> list[Piece]:
        """Release every held-back token (the text ended without a stop string)."""
        return self._release(len(self._pieces))

    def _next_piece(self, token_id: int) -> str:
        full = self._decode(self._ids)
        if full.endswith("\ufffd"):  # an incomplete UTF-8 character: its bytes go to a later token
            return ""
        if full.startswith(self._decoded):
            piece = full[len(self._decoded) :]
        else:  # the tokenizer re-spaced earlier text; keep the pieces self-consistent
            piece = self._decode([token_id])
        self._decoded = full
        return piece

    def _stop_position(self, text: str) -> int | None:
        found = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _cut_at(self, cut: int) -> None:
        """Keep the text before ``cut``: later tokens are dropped, the one across it is shortened."""
        kept: list[str] = []
        start = 0
        for piece in self._pieces:
            if start >= cut:
                break
            kept.append(piece[: cut - start])
            start += len(piece)
        self._pieces = kept

    def _safe_count(self, safe_chars: int) -> int:
        """How many leading tokens end within the first ``safe_chars`` characters."""
        end, count = 0, 0
        for piece in self._pieces:
            end += len(piece)
            if end > safe_chars:
                break
            count += 1
        return count

    def _release(self, upto: int) -> list[Piece]:
        out = [Piece(i, self._pieces[i]) for i in range(self._released, upto)]
        self._released = max(self._released, upto)
        return out


def pieces_of(decode: Callable[[list[int]], str], ids: Sequence[int], stop: Sequence[str] = ()) -> list[Piece]:
    """The final pieces of a whole sequence at once (what streaming it would have released)."""
    texts = TokenTexts(decode, stop)
    out: list[Piece] = []
    for token_id in ids:
        out += texts.push(token_id)
        if texts.stopped:
            return out
    return out + texts.finish()
