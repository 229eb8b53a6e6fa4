"""Answers that say what they answer (assistant/openers.py): a first sentence that only echoes the question
may not end there."""

import pytest
import torch

from assistant.config import AnswerConfig
from assistant.decoding import argmax_choice, greedy, mixture
from assistant.openers import adds_nothing, echoing, first_sentence
from assistant.refusals import answer_refusals, refusing
from tests.test_openers import TwoStepBatch, ranked_scores

QUESTION = "Who was the mother of the Greek hero Achilles?"
# 0 = EOS
PIECES = ["", "The", " mother", " of", " Achilles", " is", " the", " Eurynome", ".", "?", "\n", " Who", " was", ":"]


def decode(ids):
    return "".join(PIECES[i] for i in ids)


def scores_of(*ranked):
    return ranked_scores(len(PIECES), *ranked)


@pytest.mark.parametrize("text,want", [
    ("The mother is Eurynome.", "The mother is Eurynome"),
    ("Who was it? Then more", "Who was it"),
    ("  Hello world", None),  # the sentence goes on
    ("It weighs 27.", "It weighs 27"),
    ("It weighs 27.5 kg", None),  # a decimal point is not a sentence end
    ("Elements:\n1. Polonium", None),  # a list's lead-in is not a sentence
    ("Polonium\nRadium", "Polonium"),
])
def test_first_sentence(text, want):
    assert first_sentence(text) == want


@pytest.mark.parametrize("sentence,want", [
    ("The mother of the Greek hero Achilles is the mother of the Greek hero Achilles", True),
    ("Who was the mother of the Greek hero Achilles", True),
    ("The mother of the Greek hero Achilles was Eurynome", False),
    ("Achilles' mothers", True),  # a word sharing a stem with the question's is the question's
    ("It is not known", False),
    ("The year was 1867", True),  # "year" is a question word, and so is not said by the answer
])
def test_adds_nothing(sentence, want):
    question = "In what year did it end?" if "1867" in sentence else QUESTION
    assert adds_nothing(question, sentence) is (want and "1867" not in sentence)


def test_the_end_of_an_echo_is_refused_for_the_next_best():
    pick = refusing(argmax_choice, decode, {0}, [echoing(QUESTION)])
    echo = [1, 2, 3, 4, 5, 6, 2, 3, 4]  # "The mother of Achilles is the mother of Achilles"
    assert pick(echo, scores_of(8, 7), torch.stack([scores_of(8, 7)])) == 7  # not ".": " Eurynome"
    assert pick(echo, scores_of(9, 8, 10, 7), torch.stack([scores_of(9, 8, 10, 7)])) == 7  # nor "?" nor a line break
    assert pick(echo, scores_of(0, 8), torch.stack([scores_of(0, 8)])) == 0  # EOS is never refused
    said = [1, 2, 3, 4, 5, 7]  # "The mother of Achilles is Eurynome"
    assert pick(said, scores_of(8, 7), torch.stack([scores_of(8, 7)])) == 8


def test_a_first_sentence_without_words_is_not_an_echo():
    """".. cmdoption:: -u" (reST markup copied from a chunk): its ".." ends no echo; what follows is not judged."""
    pieces = ["", "..", " cmdoption", "::", " -", "u"]
    pick = refusing(argmax_choice, lambda ids: "".join(pieces[i] for i in ids), {0},
                    [echoing("Which option makes the streams unbuffered?")])
    assert pick([], ranked_scores(6, 1, 2), torch.stack([ranked_scores(6, 1, 2)])) == 1


def test_only_the_first_sentence_is_judged():
    pick = refusing(argmax_choice, decode, {0}, [echoing(QUESTION)])
    second = [1, 2, 5, 7, 8, 1, 2, 3, 4]  # "The mother is Eurynome. The mother of Achilles"
    assert pick(second, scores_of(8, 7), torch.stack([scores_of(8, 7)])) == 8


def test_greedy_answers_the_question_it_would_have_asked_back():
    """A model that would ask the question back ("Who was the mother of Achilles?") goes on to answer it."""
    per_step = [scores_of(11), scores_of(12), scores_of(6), scores_of(2), scores_of(3), scores_of(4),
                scores_of(9, 5), scores_of(7), scores_of(8), scores_of(0)]
    plain = [s.token_id for s in greedy(TwoStepBatch(per_step), mixture(torch.zeros(1)), {0}, 16)]
    assert decode(plain) == " Who was the mother of Achilles? Eurynome."
    steps = greedy(TwoStepBatch(per_step), mixture(torch.zeros(1)), {0}, 16,
                   refusing(argmax_choice, decode, {0}, [echoing(QUESTION)]))
    assert decode([s.token_id for s in steps]) == " Who was the mother of Achilles is Eurynome."


def test_refuse_echoes_is_a_setting_and_needs_the_question():
    on = AnswerConfig(restate_openers=False, loop_words=0)
    assert len(answer_refusals(on, QUESTION)) == 1
    assert answer_refusals(on, "") == []  # no question known: nothing to echo
    assert answer_refusals(AnswerConfig(restate_openers=False, loop_words=0, refuse_echoes=False), QUESTION) == []
