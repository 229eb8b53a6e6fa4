"""Answers that do not loop (assistant/repeats.py): a token that begins a fourth copy in a row of a run of words is refused."""

import pytest
import torch

from assistant.config import AnswerConfig
from assistant.decoding import argmax_choice, greedy, mixture
from assistant.refusals import answer_refusals, refusing
from assistant.repeats import looping, loops
from knowledge.errors import ConfigError


C8 = "in the city of Claros, in the Peloponnese, "  # a run of 8 words


@pytest.mark.parametrize("text,want", [
    ("Lys Lys Lys Lys", True),  # a fourth copy of one word
    ("Lys Lys Lys L", True),  # ... begun: "L" is unfinished
    ("Lys Lys Lys L ", False),  # "L" finished: another word
    ("Lys Lys Lys", False),  # three are allowed ("the view of the view of the view that ...")
    ("Austrian, Austrian, Austrian, Aus", True),
    (C8 * 3 + "in", True),  # 8 words
    (C8 * 3 + "on", False),
    (C8 * 2 + "in the city of", False),  # a third copy: allowed
    ("inspired by the view of the view of the view", False),
    # a value stated again is no loop
    ("The most recent update to the ASCII standard was in 2004, and the most recent version of the ASCII standard was in 2",
     False),
    ("Einstein worked there during the 1903-1905 period, 1903-1905", False),
    ("In The City, in the city, IN THE CITY, in", True),  # case-insensitive, punctuation apart
    ("", False),
])
def test_loops_finds_a_fourth_copy_in_a_row_begun(text, want):
    assert loops(text, 16) is want


def test_loops_looks_at_runs_up_to_the_longest():
    assert loops(C8 * 3 + "in", 8) and not loops(C8 * 3 + "in", 7)


PIECES = ["", " in", " Austrian", ",", " and", " died", "."]  # 0 = EOS


def decode(ids):
    return "".join(PIECES[i] for i in ids)


class LoopingBatch:
    """One row that writes " in" then " Austrian," forever, with " and died." as its second choice, then EOS."""

    rows = 1
    detour = [4, 5, 6, 0]  # " and died." EOS

    def __init__(self):
        self.fed = []

    def _next(self):
        scores = torch.full((1, len(PIECES)), -30.0)
        if 4 in self.fed:  # the detour taken: finish it
            scores[0, self.detour[len(self.fed) - self.fed.index(4)]] = 0.0
            return scores
        scores[0, 1 if not self.fed else (2 if len(self.fed) % 2 else 3)] = -1.0
        scores[0, 4] = -2.0
        return scores

    def prefill(self):
        return self._next()

    def step(self, tokens):
        self.fed.append(int(tokens[0]))
        return self._next()


def test_greedy_ends_a_loop_where_the_model_has_something_else_to_say():
    plain = [s.token_id for s in greedy(LoopingBatch(), mixture(torch.zeros(1)), {0}, 9)]
    assert decode(plain) == " in" + " Austrian," * 4
    refuse = refusing(argmax_choice, decode, {0}, answer_refusals(AnswerConfig(restate_openers=False, refuse_echoes=False), "Q?"))
    steps = list(greedy(LoopingBatch(), mixture(torch.zeros(1)), {0}, 16, refuse))
    assert decode([s.token_id for s in steps]) == " in Austrian, Austrian, Austrian, and died."
    assert [round(s.logprob) for s in steps][7] == -2  # the detour's score is the model's own


def test_loop_words_is_validated_and_can_be_off():
    assert AnswerConfig().loop_words == 16
    assert answer_refusals(AnswerConfig(restate_openers=False, loop_words=0, refuse_echoes=False), "Q?") == []
    assert looping(16)(0, "", "Lys Lys Lys Lys") and not looping(16)(0, "", "Lys Lys Lys")
    with pytest.raises(ConfigError, match="loop_words must be >= 0"):
        AnswerConfig(loop_words=-1)
