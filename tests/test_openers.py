"""Answers that say what they answer (assistant/openers.py): an opener that only announces a value is refused."""

import pytest
import torch

from assistant.decoding import argmax_choice, greedy, mixture
from assistant.openers import OPENER_TOKENS, announces, announcing_opener
from assistant.refusals import answer_refusals, refusing

PIECES = ["", "The", " answer", " writer", " is", " 1889", ".", " Answer", ":"]  # 0 = EOS


def decode(ids):
    return "".join(PIECES[i] for i in ids)


def ranked_scores(size, *ranked):
    """(size,) log-probs with the tokens of ``ranked`` best first, the rest far below."""
    scores = torch.full((size,), -30.0)
    for place, token in enumerate(ranked):
        scores[token] = -1.0 - place
    return scores


def scores_of(*ranked):
    return ranked_scores(len(PIECES), *ranked)


@pytest.mark.parametrize("text,want", [
    ("The answer is 1963.", True),
    ("The answer", True),
    ("  Answer: 1963", True),
    ("The correct answer is 90%.", True),
    ("My final answer:", True),
    ("**Answer**: 5", True),
    ("The answers are", True),
    ("The most relevant answer is: 2015", True),
    ("The best possible answer", True),
    ("Correct answer: 5", True),
    ("Albert Einstein answered the letter", False),
    ("Frank Borman's answer was", False),  # not an opener: a name opens it
    ("The", False),
    ("The writer Aldous Huxley was born in 1889.", False),
    ("Answering that needs the date.", False),
    ("Aldous Huxley was born in 1889. The answer is in the first sentence.", False),  # not the opener
    ("The Answerbook of 1962", False),
])
def test_announces_only_an_opener_that_announces_a_value(text, want):
    assert announces(text) is want


def test_the_announcing_token_is_refused_for_the_next_best():
    pick = refusing(argmax_choice, decode, {0}, [announcing_opener])
    scores = scores_of(2, 3, 4)  # " answer" best, then " writer"
    rows = torch.stack([scores, scores])
    assert pick([1], scores, rows) == 3  # "The" + " writer", not "The" + " answer"
    assert scores[2] == -1.0 and rows[1, 2] == -1.0  # the caller's tensors are left as they were
    assert pick([], scores_of(7, 1), torch.stack([scores_of(7, 1)])) == 1  # "Answer" refused at the start: "The"
    assert pick([1], scores_of(0, 2), torch.stack([scores_of(0, 2)])) == 0  # EOS is never refused


def test_the_choice_is_asked_again_with_the_refused_token_gone_from_every_row():
    seen = []

    def choose(ids, scores, rows):  # a constrained choice reading the rows, as the quote constraint does
        seen.append(rows[:, 2].tolist())
        return int(rows[0].argmax())

    rows = torch.stack([scores_of(2, 3), scores_of(3, 2)])
    assert refusing(choose, decode, {0}, [announcing_opener])([1], rows[1].clone(), rows) == 3
    assert seen == [[-1.0, -2.0], [float("-inf"), float("-inf")]]


def test_an_answer_past_its_opener_is_left_alone():
    pick = refusing(argmax_choice, decode, {0}, [announcing_opener])
    later = [3] * OPENER_TOKENS + [1]  # "... The" after the opener's tokens: " answer" may follow
    assert pick(later, scores_of(2, 3), torch.stack([scores_of(2, 3)])) == 2


class TwoStepBatch:
    """One row: the next token's log-probs are given per step."""

    rows = 1

    def __init__(self, per_step):
        self.per_step, self.steps, self.fed = per_step, 0, []

    def prefill(self):
        return self.per_step[0].unsqueeze(0)

    def step(self, tokens):
        self.steps += 1
        self.fed.append(int(tokens[0]))
        return self.per_step[min(self.steps, len(self.per_step) - 1)].unsqueeze(0)


def test_greedy_with_the_refusal_writes_the_restating_answer():
    """A model that would answer "The answer is 1889." answers "The writer is 1889." instead (the scores
    of what it writes are its own, unchanged)."""
    per_step = [scores_of(1), scores_of(2, 3), scores_of(4), scores_of(5), scores_of(6), scores_of(0)]
    plain = [s.token_id for s in greedy(TwoStepBatch(per_step), mixture(torch.zeros(1)), {0}, 16)]
    assert decode(plain) == "The answer is 1889."
    steps = list(greedy(TwoStepBatch(per_step), mixture(torch.zeros(1)), {0}, 16, refusing(argmax_choice, decode, {0}, [announcing_opener])))
    assert decode([s.token_id for s in steps]) == "The writer is 1889."
    assert steps[1].logprob == pytest.approx(-2.0)


def test_restate_openers_is_a_setting():
    from assistant.config import AnswerConfig

    assert answer_refusals(AnswerConfig(loop_words=0, refuse_echoes=False), "Q?") == [announcing_opener]
    assert answer_refusals(AnswerConfig(restate_openers=False, loop_words=0, refuse_echoes=False), "Q?") == []
    choose = refusing(argmax_choice, decode, {0}, [])
    assert choose is argmax_choice  # nothing refused: the choice itself


def test_beam_candidates_lose_the_refused_tokens():
    """Beam search's shortlist (assistant/refusals.py, refusing_shortlist): each beam's best extensions, without
    the refused ones; the scores are the shortlist's own."""
    from assistant.refusals import refusing_shortlist

    plain = refusing_shortlist(None, decode, {0}, [announcing_opener])
    assert plain([1], scores_of(2, 3, 4), 2) == [(3, -2.0), (4, -3.0)]  # " answer" passed over
    assert plain([1], scores_of(0, 2, 3), 2) == [(0, -1.0), (3, -3.0)]  # EOS kept
    quoted = refusing_shortlist(lambda ids, scores, n: [(2, -0.5), (3, -7.0), (5, -9.0)][:n], decode, {0},
                                [announcing_opener])
    assert quoted([1], scores_of(2, 3), 2) == [(3, -7.0), (5, -9.0)]
    everything_refused = refusing_shortlist(lambda ids, scores, n: [(2, -0.5)], decode, {0}, [announcing_opener])
    assert everything_refused([1], scores_of(2), 2) == [(2, -0.5)]  # nothing else to take: the choice stands
    assert refusing_shortlist(None, decode, {0}, []) is None  # no refusals: beam search as it was
