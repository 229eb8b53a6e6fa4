"""Copying from the focus (assistant/copying.py): the continuation of a focus sentence the answer
has begun to follow, and its first token raised in greedy decoding."""

from __future__ import annotations

import pytest

from assistant.config import AnswerConfig
from assistant.copying import copy_continuations, copy_token_ids
from knowledge.errors import ConfigError

EINSTEIN = "Einstein was born in Augsburg, in the Kingdom of Württemberg."
ARUBA = "Aruba is a country in the southern Mediterranean Sea."


def test_the_longest_suffix_a_focus_sentence_holds_gives_its_continuation():
    assert copy_continuations("Albert Einstein was born in", [EINSTEIN], 8) == [" Augsburg, in the Kingdom of Württemberg."]
    assert copy_continuations("He was born in Aug", [EINSTEIN], 8) == ["sburg, in the Kingdom of Württemberg."]
    # the longest match decides: "born in" (7 characters), not "in" of "in the Kingdom"
    assert copy_continuations("Where was he born in", [EINSTEIN], 2) == [" Augsburg, in the Kingdom of Württemberg."]
    # every sentence holding the longest match gives its continuation
    assert copy_continuations("It lies in the", [EINSTEIN, ARUBA], 6) == [" Kingdom of Württemberg.", " southern Mediterranean Sea."]


def test_a_match_is_case_insensitive_starts_at_word_starts_and_is_long_enough():
    assert copy_continuations("ALBERT EINSTEIN WAS BORN IN", [EINSTEIN], 8) == [" Augsburg, in the Kingdom of Württemberg."]
    assert copy_continuations("The island lies in the", [ARUBA], 8) == []  # "in the": 6 characters
    assert copy_continuations("The island lies in the", [ARUBA], 6) == [" southern Mediterranean Sea."]
    assert copy_continuations("a sheborn in", [EINSTEIN], 4) == []  # "born in" of "sheborn" starts inside a word
    assert copy_continuations("It is in Württemberg.", [EINSTEIN], 4) == []  # the sentence ends there: nothing to copy
    assert copy_continuations("", [EINSTEIN], 1) == [] and copy_continuations("born in", [], 1) == []


def test_the_first_token_of_each_continuation_once():
    def encode(text):  # a "tokenizer" whose tokens are characters
        return [ord(c) for c in text]

    assert copy_token_ids([" Augsburg, in", "sburg", " Augsburg"], encode) == [ord(" "), ord("s")]
    assert copy_token_ids([""], encode) == []


def test_the_settings_are_checked():
    assert AnswerConfig().copy_bonus >= 0
    with pytest.raises(ConfigError, match="copy_bonus"):
        AnswerConfig(copy_bonus=-1.0)
    with pytest.raises(ConfigError, match="copy_min_chars"):
        AnswerConfig(copy_min_chars=0)


# --- greedy rag-token on the tiny random LM ---------------------------------------------------------

def test_greedy_decoding_takes_the_copy_wherever_the_answer_follows_a_focus_sentence():
    """With a bonus no score can match, every step after a word of the focus sentence writes the
    sentence's next token; without it the random LM strays from the sentence somewhere."""
    from assistant.engine import load_mode
    from assistant.focus import focus_sentences
    from tests import tinylm

    def answers(gen, bonus):
        hits = tinylm.OverlapRetriever(tinylm.make_chunks(tinylm.FACTS)).search(tinylm.QUESTION, 3)
        config = AnswerConfig(k=3, max_new_tokens=12, copy_bonus=bonus, copy_min_chars=1, prior_question_weight=0.0)
        focus = focus_sentences(tinylm.QUESTION, [h.chunk.text for h in hits], config.quote_focus_ratio)
        return load_mode("rag-token", gen, config).answer(tinylm.QUESTION, [], hits), focus

    def steps_off_the_copy(answer, focus):
        """(steps where the answer followed a focus sentence, of which the token left it)."""
        followed = left = 0
        before = ""
        for t in answer.tokens:
            copies = copy_continuations(before, focus, 1)
            if copies:
                followed += 1
                left += not any(c.startswith(t.text) or c.startswith(" " + t.text.lstrip()) for c in copies)
            before += t.text
        return followed, left

    with_bonus, without = [0, 0], [0, 0]
    for seed in range(6):
        gen = tinylm.make_generator(seed=seed)
        with_bonus = [a + b for a, b in zip(with_bonus, steps_off_the_copy(*answers(gen, 1e4)))]
        without = [a + b for a, b in zip(without, steps_off_the_copy(*answers(gen, 0.0)))]
    assert with_bonus[0] > 0 and with_bonus[1] == 0
    assert without[1] > 0, "the random LM always copied: the test would prove nothing"
