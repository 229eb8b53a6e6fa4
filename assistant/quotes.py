"""Quoted names and numbers: while decoding, an answer may state a name or a number (a word with a
capital letter or a digit) only if a retrieved chunk, the question or the conversation contains it.

This is the support rule of ``assistant.support`` (a name or a number is "document" only when a
chunk contains it verbatim) turned into a decoding constraint: where the documents contradict
the generator's memory ("the capital is Yerevan" against its "Baku"), the memorised value is not
in any chunk, so the answer cannot state it, and the next-best word the documents do contain
takes its place. Everything else (function words, lowercase words, punctuation) decodes as before.

Words are compared as lowercase runs of letters and digits, so "Europe" is a prefix of the
documents' "European" and passes while it is being written. A number is also compared whole, with
its separators, as the texts write it (``NUMBER``): "41,270,000", not "41.270 million" nor a "27" cut
from "27,164,342". At the
start of a sentence a capitalised common word ("Based", "However": the generator's vocabulary
holds it as a lowercase word) is not taken for a name.

The choice is exact: the token maximising score − penalty · [it states an unquoted name or
number], searched in widening windows of the best-scored tokens, up to the whole vocabulary
(``quoted_argmax``): a word begun as the prefix of a quoted one is finished as one, even when none
of the model's best continuations is. A character written byte by byte ("ừ") is a letter of its
word while it is being written (``PARTIAL``): "Boost" + the bytes of "ừ" is no beginning of a quoted word.

Within a name or a number the documents often hold several candidates (the years of an article
all begin "19"), and the generator's memory steers between them: after "19" the model that
remembers 1962 writes "6" and lands on the article's 1960. ``value_contrast`` applies
context-aware decoding (Shi et al. 2023) only there: among the quotable tokens of a name or
number that the mixture finds plausible (p ≥ β · p of its choice, Li et al. 2023's constraint),
the token maximising log p(y|x,Z) + α · (log p(y|x,Z) − log p(y|x,∅)), the one the documents
raised most above the model's memory, and only where the documents lowered the mixture's own
choice below the model's memory (where they agree with it, the contrast would favour the other
values they mention: measured, it cost the ordinary questions 16 points). Everywhere else (function words, phrasing) the answer
decodes as plain RAG, so the contrast cannot break its fluency.
"""

from __future__ import annotations

import math
import re
from typing import Collection, Iterable, Iterator, Sequence

import torch

from .grounding import disagreement_prior
from .marginals import rag_token_marginalize
from .support import FUNCTION_WORDS

RUN = re.compile(r"[^\W_]+")  # a run of letters and digits
PARTIAL = "\ufffd"  # how a token holding only some bytes of a character decodes ("ừ" takes several)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")  # a number as written: "41,270,000", "3.5", the "1960" of "1960s"
NUMBER_SEPARATORS = ".,"
ANSWER_RUN = re.compile(r"(?:[^\W_]|\ufffd)+")  # a run of the answer: a character still being written is one of its letters
SENTENCE_BREAK = frozenset(".!?:;\n")
WINDOWS = (16, 256, 4096, None)  # candidate windows of the best-scored tokens; None: the whole vocabulary


def prefixes(words: Iterable[str]) -> frozenset[str]:
    """Every non-empty prefix of every word."""
    return frozenset(w[:i] for w in words for i in range(1, len(w) + 1))


FUNCTION_PREFIXES = prefixes(FUNCTION_WORDS)


class CommonWords:
    """Lowercase words the generator's vocabulary holds as single word tokens (" based", " however"):
    capitalised at a sentence start they are ordinary words, not names. Built once per generator."""

    def __init__(self, pieces: Sequence[str]) -> None:
        self.words = frozenset(p[1:] for p in pieces if p[:1] == " " and p[1:].isalpha() and p[1:].islower())
        self.prefixes = prefixes(self.words)


class Quotable:
    """The words an answer may state as names and numbers: every run of letters and digits in
    ``texts`` (the retrieved chunks, the question), in any case; and the function words, in
    lowercase, as "I", or capitalised at a sentence start ("The"; not "BEFORE" or "Her" inside one)."""

    def __init__(self, texts: Iterable[str], common: CommonWords | None = None, focus: Quotable | None = None,
                 question: str = "", sentences: Sequence[str] = ()) -> None:
        texts = list(texts)
        runs = [r for t in texts for r in RUN.findall(t)]
        self.asked = prefixes(r.lower() for r in RUN.findall(question))  # the question's words (``writes_new_name``)
        self.words = frozenset(r.lower() for r in runs)
        self.prefixes = prefixes(self.words)
        self.cased_prefixes = prefixes(r for r in runs if _case_turns(r))  # "iPhone", "McDonald": as written
        self.numbers = frozenset(n for t in texts for n in NUMBER.findall(t))  # with their separators
        self.number_prefixes = prefixes(self.numbers)
        self.common = common
        self.focus = focus  # the preferred tier: the sentences the question points to (assistant.focus)
        self.sentences = tuple(sentences)  # those sentences themselves (answer.copy_bonus)

    def tier(self, before: str, piece: str, final: bool = False) -> int:
        """0: ``focus`` admits the piece (or there is no focus); 1: only these texts do; 2: they do not."""
        if not self.admits(before, piece, final):
            return 2
        return 0 if self.focus is None or self.focus.admits(before, piece, final) else 1

    def admits(self, before: str, piece: str, final: bool = False) -> bool:
        """Whether appending ``piece`` to the answer text ``before`` keeps every name and number it
        touches quotable: each run it completes is a quotable word, and the run it leaves open is a
        prefix of one (``final``: the answer ends here, so that run is complete too)."""
        text = before + piece
        for m in _touched_runs(text, len(before)):
            complete = final or m.end() < len(text)
            if not self._quotable(m.group(), complete, _sentence_start(text, m.start())):
                return False
        return all(self._quotable_number(m.group(), text[m.end():], final) for m in _touched_numbers(text, len(before)))

    def states_name(self, before: str, piece: str) -> bool:
        """Whether ``piece`` writes part of a name or a number (a run with a capital letter or a
        digit that is not a function word)."""
        return any(True for _ in _names_written(before, piece))

    def writes_new_name(self, before: str, piece: str) -> bool:
        """Whether ``piece`` writes part of a name that is not a number and not one of the question's words
        ("Kurd" after "The official language is", not "Afghan" nor "19")."""
        return any(not any(c.isdigit() for c in run) and run.lower() not in self.asked
                   for run in _names_written(before, piece))

    def _quotable(self, run: str, complete: bool, sentence_start: bool) -> bool:
        if not any(c.isdigit() or c.isupper() for c in run):
            return True  # not a name or a number
        if PARTIAL in run:  # "Boo" + a byte of "ừ": quotable only as a word the texts hold with letters there
            return self._quotable_partial(run, complete)
        if _case_turns(run):  # "SchlEier", "USAsI": a capital inside a word only as the texts write it
            return run in self.cased_prefixes
        low = run.lower()
        if low in (self.words if complete else self.prefixes) or run == "I":
            return True
        capitalised = run[:1].isupper() and run[1:] == run[1:].lower() and not any(c.isdigit() for c in run)
        if not (sentence_start and capitalised):
            return False
        if low in (FUNCTION_WORDS if complete else FUNCTION_PREFIXES):
            return True
        return self.common is not None and low in (self.common.words if complete else self.common.prefixes)

    def _quotable_number(self, number: str, after: str, final: bool) -> bool:
        """Whether ``number``, followed by ``after`` in the answer, is written as the texts write it: "41,270,000", not
        "41.270" nor "41" of it. Still open (``after`` empty), a prefix of one of theirs suffices.

        A separator after it either goes on ("41," of "41,270") or is punctuation ("born in 1889, in ..."). As
        punctuation it may not be the other separator of a number of two digits or more that the texts go on writing
        ("27." where they write "27,164,342": the answer meant "27.164 million"), so that the number is finished as
        written, not cut. A single digit ends a sentence or a list item too often ("The answer is 1.") for that."""
        sep = after[:1] if after[:1] in NUMBER_SEPARATORS and not after[1:2].isdigit() else ""
        if not sep:
            return number in (self.number_prefixes if not after and not final else self.numbers)
        goes_on = not final and after == sep and number + sep in self.number_prefixes
        ends = number in self.numbers and (len(number) < 2 or not any(number + other in self.number_prefixes
                                                                      for other in NUMBER_SEPARATORS if other != sep))
        return goes_on or ends

    def _quotable_partial(self, run: str, complete: bool) -> bool:
        """Whether a name with characters still being written (``PARTIAL``: each stands for one or more
        non-ASCII letters, its bytes not all written yet) can be, or begin, a word of the texts."""
        pattern = re.compile("[^\\x00-\\x7f]+".join(re.escape(part) for part in re.split(f"{PARTIAL}+", run.lower())))
        match = pattern.fullmatch if complete else pattern.match
        return any(match(word) for word in self.words)


def quoted_argmax(scores: torch.Tensor, before: str, pieces: Sequence[str], quotable: Quotable, penalty: float,
                  eos_ids: Collection[int] = (), focus_penalty: float = 0.0) -> int:
    """argmax_y score(y) − penalty · [y states a name or number ``quotable`` does not admit]
    − focus_penalty · [it admits y, but not its focus].

    scores: (V,) the combined log-probs of the next token; before: the answer's text so far;
    pieces: each token's text; ``penalty`` in nats (inf: never state an unquoted one). If no
    token of the vocabulary is admitted, the plain argmax.
    """
    return quoted_top(scores, before, pieces, quotable, penalty, eos_ids, 1, focus_penalty)[0][0]


def quoted_top(scores: torch.Tensor, before: str, pieces: Sequence[str], quotable: Quotable, penalty: float,
               eos_ids: Collection[int] = (), n: int = 1, focus_penalty: float = 0.0) -> list[tuple[int, float]]:
    """The ``n`` best tokens by score − penalty · [unquoted name or number] − focus_penalty ·
    [quoted, but not from the focus], as (token, penalised score), best first (fewer when fewer
    have a finite score; the plain top ``n`` when none has). Exact: the candidate window widens,
    up to the whole vocabulary, until no token below it can enter the list."""
    costs = (0.0, focus_penalty, penalty)  # by Quotable.tier
    vocab = scores.shape[-1]
    n = min(n, vocab)
    found: list[tuple[float, int]] = []  # (penalised score, token), best first
    for window in WINDOWS:
        values, ids = scores.topk(vocab if window is None else min(max(window, n), vocab))
        found = []
        for value, token in zip(values.tolist(), ids.tolist()):
            if len(found) >= n and value <= found[n - 1][0]:  # sorted: nothing further down can enter
                break
            final = token in eos_ids
            score = value - costs[quotable.tier(before, "" if final else _piece(pieces, token), final)]
            if score > -math.inf:
                found.append((score, token))
                found.sort(key=lambda f: -f[0])
        if len(found) >= n and (ids.numel() >= vocab or float(values[-1]) <= found[n - 1][0]):
            break
    if not found:
        values, ids = scores.topk(n)
        return list(zip(ids.tolist(), values.tolist()))
    return [(token, score) for score, token in found[:n]]


def routed_scores(scores: torch.Tensor, row_logprobs: torch.Tensor, doc_logprior: torch.Tensor, before: str,
                  pieces: Sequence[str], quotable: Quotable, weight: float) -> torch.Tensor:
    """The RAG-Token mixture under :func:`assistant.grounding.disagreement_prior` where the mixture's own choice
    writes a new name (:meth:`Quotable.writes_new_name`), else ``scores``.

    The chunks that say nothing about the name being written give the model's memory ("Pashtun") and,
    retrieved from the same article, outvote the one chunk that states the documents' value ("Kurdish and Dari
    are the official languages"); re-weighted by how far each departs from the null document, that one
    decides. Numbers are left alone: every chunk mentioning some year departs from the memory at a digit.

    scores: (V,) the mixture's log-probs; row_logprobs: (k + 1, V), the chunks' then the null document's;
    doc_logprior: (k,) log p(z|x).
    """
    if weight <= 0 or not quotable.writes_new_name(before, _piece(pieces, int(scores.argmax()))):
        return scores
    docs, null = row_logprobs[:-1].float(), row_logprobs[-1].float()
    return rag_token_marginalize(docs, disagreement_prior(docs, null, doc_logprior.float(), weight))  # (V,)


def value_contrast(scores: torch.Tensor, null_logprobs: torch.Tensor, chosen: int, before: str, pieces: Sequence[str],
                   quotable: Quotable, alpha: float, beta: float = 0.1, conflict: float = 0.0, window: int = 16) -> int:
    """Context-aware decoding inside names and numbers (module docstring): if ``chosen`` or the
    mixture's own best token ŷ (which the quote constraint may have refused) writes part of a name or
    number, and the documents made ŷ less likely than the model alone (PMI_Z(ŷ) < −``conflict``: where
    they agree with the memory, the contrast would only favour the values they mention besides), the
    token maximising score + α · (score − log p(y|x,∅)) among ``chosen`` and the quotable
    name-or-number tokens of the ``window`` best with p ≥ β · p(chosen); else ``chosen``.

    scores: (V,) the mixture's log-probs; null_logprobs: (V,) the null document's (closed-book) row.
    """
    if alpha <= 0:
        return chosen
    intended = int(scores.argmax())
    if not (quotable.states_name(before, _piece(pieces, chosen)) or quotable.states_name(before, _piece(pieces, intended))):
        return chosen
    if float(scores[intended]) - float(null_logprobs[intended]) >= -conflict:
        return chosen  # the documents did not lower the mixture's own choice below the model's memory
    floor = float(scores[chosen]) + math.log(beta)

    def contrasted(token: int, value: float) -> float:
        return value + alpha * (value - float(null_logprobs[token]))

    best, best_score = chosen, contrasted(chosen, float(scores[chosen]))
    values, ids = scores.topk(min(window, scores.shape[-1]))
    for value, token in zip(values.tolist(), ids.tolist()):
        if value < floor:
            break
        piece = _piece(pieces, token)
        if token != chosen and quotable.states_name(before, piece) and quotable.admits(before, piece):
            score = contrasted(token, value)
            if score > best_score:
                best, best_score = token, score
    return best


def _piece(pieces: Sequence[str], token: int) -> str:
    return pieces[token] if token < len(pieces) else ""


def _names_written(before: str, piece: str) -> Iterator[str]:
    """The names and numbers (:func:`_is_name`) that ``piece``, appended to ``before``, writes part of."""
    text = before + piece
    for m in _touched_runs(text, len(before)):
        if m.end() > len(before) and _is_name(m.group()):
            yield m.group()


def _is_name(run: str) -> bool:
    return any(c.isdigit() or c.isupper() for c in run) and run.lower() not in FUNCTION_WORDS


def _case_turns(run: str) -> bool:
    """Whether a lowercase letter is followed by a capital inside the run."""
    return any(a.islower() and b.isupper() for a, b in zip(run, run[1:]))


def _touched_runs(text: str, start: int) -> Iterator[re.Match[str]]:
    """The runs of ``text`` from ``start`` on, the first one from its beginning if ``start`` falls inside it."""
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == PARTIAL):
        start -= 1
    return ANSWER_RUN.finditer(text, start)


def _touched_numbers(text: str, start: int) -> Iterator[re.Match[str]]:
    """The numbers (``NUMBER``) of ``text`` from ``start`` on, the first one from its beginning if ``start`` falls
    inside it or just after it ("in 19" + "58"; "41," + "270")."""
    while start > 0 and (text[start - 1].isdigit() or (text[start - 1] in NUMBER_SEPARATORS and start > 1
                                                       and text[start - 2].isdigit())):
        start -= 1
    return NUMBER.finditer(text, start)


def _sentence_start(text: str, index: int) -> bool:
    """Whether the word at ``index`` starts the answer or a sentence (after . ! ? : ; or a new line)."""
    before = text[:index].rstrip(" \t\"'“‘(*-#")
    return not before or before[-1] in SENTENCE_BREAK
