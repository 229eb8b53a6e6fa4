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
