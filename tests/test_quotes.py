"""Quoted names and numbers (assistant/quotes.py): the word rule by hand, the constrained argmax
against a brute-force scan of the vocabulary, and the modes' contract on the tiny random LM."""

import math
import random
import re
from dataclasses import replace

import pytest
import torch

from assistant.config import AnswerConfig, ModeTables
from assistant.engine import load_mode
from assistant.grounding import jensen_shannon
from assistant.quotes import CommonWords, Quotable, quoted_argmax
from knowledge.errors import ConfigError
from tests import tinylm

CHUNK = "The capital of Azerbaijan is Yerevan since 1958. The European Union is far."


@pytest.fixture(scope="module")
def quotable():
    common = CommonWords([" based", " however", " the", " capital", "Baku", " Bak"])
    return Quotable([CHUNK, "What is the capital of Azerbaijan?"], common)


@pytest.mark.parametrize("before,piece,ok", [
    ("The capital is", " Y", True),  # a prefix of the chunk's "Yerevan"
    ("The capital is Y", "ere", True),
    ("The capital is Yere", "van", True),
    ("The capital is", " Bak", False),  # the model's "Baku": in no chunk
    ("The capital is Yerevan", " since", True),  # lowercase words are free
    ("The capital is Yerevan, home of", " the", True),
    ("It became so in ", "19", True),
    ("It became so in 19", "58", True),
    ("It became so in 19", "62", False),  # 1962: a number the chunk does not hold
    ("It is in Europe", ",", False),  # "Europe" completed: only "European" is quoted
    ("It is in Europe", "an", True),
    ("Azerbaijan", " is", True),  # the question's words count
    ("Based", " on", True),  # a capitalised common word at a sentence start is not a name
    ("It is. However", ",", True),
    ("It is not", " Based", False),  # ... but it is in mid-sentence
    ("", "Bak", False),  # a sentence start does not excuse a word that is no common word
    ("The capital is", " the", True),
    ("It was fought at the Battle of", " BEFORE", False),  # a function word in capitals inside a sentence
    ("The capital is", " Her", False),
    ("So", " I", True),
    ("Yes. The", " capital", True),
])
def test_admits_by_hand(quotable, before, piece, ok):
    assert quotable.admits(before, piece) is ok


def test_the_end_of_the_answer_completes_the_last_word(quotable):
    assert quotable.admits("The capital is Yere", "") is True  # it may still grow
    assert quotable.admits("The capital is Yere", "", final=True) is False
    assert quotable.admits("The capital is Yerevan", "", final=True) is True


@pytest.mark.parametrize("before,piece,final,ok", [
    ("The commander was Frank Boost", "\ufffd", False, False),  # "Boost" + a byte of "ừ": no word of the texts
    ("The commander was Frank Boost\ufffd", "\ufffda", False, False),  # the rest of "ừ", then "a"
    ("The commander was Frank Boo", "st", False, True),
    ("The singer was Nguy", "\ufffd", False, True),  # the first bytes of the chunk's "Nguyễn"
    ("The singer was Nguy\ufffd", "\ufffd", False, True),  # more of them
    ("The singer was Nguy\ufffd", "n", False, True),
    ("The singer was Nguy\ufffd", "", True, False),  # "Nguyễ" is not a word of the texts
    ("The singer was Nguy\ufffdn", "", True, True),
    ("The word is boo", "\ufffd", False, True),  # a lowercase word is free, whatever its letters
])
def test_characters_written_byte_by_byte_are_letters_of_the_word(before, piece, final, ok):
    quotable = Quotable(["Frank Boost met Nguyễn in Huế."])
    assert quotable.admits(before, piece, final) is ok


@pytest.mark.parametrize("before,piece,final,ok", [
    ("It covers ", "41", False, True),
    ("It covers 41", ",", False, True),  # "41," of "41,270,000"
    ("It covers 41,", "270", False, True),
    ("It covers 41,270,000", " square", False, True),
    ("It covers 41", ".", False, False),  # "41." would begin no number of the texts, nor end one
    ("It covers 41.", "270", False, False),  # "41.270 million": not how the texts write it
    ("It covers 41,270", " million", False, False),  # a number cut short
    ("It covers 41,270", "", True, False),
    ("It was born in 1889", ",", False, True),  # "1889" ends at the comma
    ("It was born in 1889,", " in", False, True),
    ("It was born in 1889", ".", False, True),
    ("It was born in 1889.", "5", False, False),
    ("It was born in 1889.", "", True, True),
    ("It is 3", ".", False, True),  # "3." of "3.5"
    ("It is 3.", "5", False, True),
    ("It is 3.5", "", True, True),
    ("It was the 1960", "s", False, True),  # the "1960" of "1960s"
    ("It was the 1960", "", True, False),
    ("It is 30", "%", False, True),
    ("About 27", ".", False, False),  # the texts write 27 on as "27,164,342": "27." would cut it ("27.164 million")
    ("About 27", ",", False, True),
    ("About 27,", "164", False, True),
    ("About 27", " million", False, True),
    ("About 27", "", True, True),
    ("The answer is 1", ".", False, True),  # a single digit: a sentence end, though the texts write "1,000"
])
def test_numbers_are_stated_as_the_texts_write_them(before, piece, final, ok):
    quotable = Quotable(["Asia covers 41,270,000 square kilometres, about 30% of the land. Huxley was born in 1889, in "
                         "Godalming, in the 1960s. It is 3.5 m tall. About 27 million people (27,164,342) live there, 1 in 1,000 of them."])
    assert quotable.admits(before, piece, final) is ok


def test_words_are_compared_in_any_case(quotable):
    assert quotable.admits("It is", " YEREVAN,") and quotable.admits("it is", " yerevan")


PIECES = ["", " Y", "ere", "van", " Bak", "u", " 19", "58", "62", ".", " is", " the", " Europe", "an", " ,", " 7"]


def brute_force(scores, before, pieces, quotable, penalty, eos):
    best, best_score = None, -math.inf
    for token, value in enumerate(scores.tolist()):
        final = token in eos
        ok = quotable.admits(before, "" if final else pieces[token], final)
        score = value if ok else value - penalty
        if score > best_score:
            best, best_score = token, score
    return best


@pytest.mark.parametrize("penalty", [0.5, 2.0, 8.0, math.inf])
def test_quoted_argmax_is_the_penalised_argmax_over_the_whole_vocabulary(quotable, penalty):
    rng = random.Random(0)
    for trial in range(200):
        scores = torch.randn(len(PIECES), generator=torch.Generator().manual_seed(trial)) * 3
        before = rng.choice(["The capital is", "The capital is Yere", "In 19", "It is", "It is in Europe"])
        got = quoted_argmax(scores, before, PIECES, quotable, penalty, eos_ids={0})
        assert got == brute_force(scores, before, PIECES, quotable, penalty, {0}), (trial, before)


def test_quoted_argmax_beyond_the_first_window(quotable):
    pieces = [" Bak"] * 3000 + [" Y"]  # every well-scored token is unquoted: the search widens
    scores = torch.linspace(10, 0, len(pieces))
    assert quoted_argmax(scores, "The capital is", pieces, quotable, math.inf) == 3000
    assert quoted_argmax(scores, "The capital is", pieces, quotable, 1.0) == 0  # a soft penalty lets the best win
    past = [" Bak"] * 5000 + [" Y"]  # none among the best 4096: the search goes on over the whole vocabulary
    assert quoted_argmax(torch.linspace(10, 0, len(past)), "The capital is", past, quotable, math.inf) == 5000
    begun = [" Yere"] + ["ừa"] * 5000 + ["van"]  # a begun name is finished as the documents' word, however unlikely
    assert quoted_argmax(torch.linspace(10, 0, len(begun)), "The capital is Yere", begun, quotable, math.inf) == 5001
    nowhere = [" Bak"] * 5000  # no token of the vocabulary is admitted: the model's own choice stands ("model")
    assert quoted_argmax(torch.linspace(10, 0, len(nowhere)), "The capital is", nowhere, quotable, math.inf) == 0


def test_quoted_top_is_the_penalised_top_n(quotable):
    from assistant.quotes import quoted_top

    for trial in range(100):
        scores = torch.randn(len(PIECES), generator=torch.Generator().manual_seed(trial)) * 3
        for penalty in (1.0, math.inf):
            got = quoted_top(scores, "The capital is", PIECES, quotable, penalty, {0}, 4)
            want = sorted(((v - (0 if quotable.admits("The capital is", "" if t == 0 else PIECES[t], t == 0) else penalty), t)
                           for t, v in enumerate(scores.tolist())), reverse=True)
            want = [(t, v) for v, t in want if v > -math.inf][:4]
            assert [t for t, _ in got] == [t for t, _ in want]
            assert [v for _, v in got] == pytest.approx([v for _, v in want])


def test_quote_penalty_is_validated():
    with pytest.raises(ConfigError, match="quote_penalty"):
        AnswerConfig(quote_penalty=-1.0)
    assert AnswerConfig(quote_penalty=math.inf).quote_penalty == math.inf


# --- the modes' contract on the tiny LM ------------------------------------------------------------

PLAIN = {"context_weight": 0.0, "plausibility": 0.0, "prior_question_weight": 0.0}
YEARS = ("1815", "1867", "1912")


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def answers_with(gen, mode, penalty, facts, question=tinylm.QUESTION, n=12, beams=1):
    hits = tinylm.OverlapRetriever(tinylm.make_chunks(facts)).search(question, 3)
    config = AnswerConfig(k=3, max_new_tokens=n, quote_penalty=penalty, **PLAIN)
    if beams > 1:
        key = "beams" if mode == "rag-sequence" else "beam_size"
        config = replace(config, modes=ModeTables({mode: {key: beams}}))
    return load_mode(mode, gen, config).answer(question, [], hits), hits


def years_in(text):
    return set(re.findall(r"\d+", text))


@pytest.mark.parametrize("mode", ["rag-token", "concat"])
def test_penalty_zero_decodes_as_before(gen, mode):
    facts = [f + " 1867" for f in tinylm.FACTS]
    plain, _ = answers_with(gen, mode, 0.0, facts)
    tiny, _ = answers_with(gen, mode, 1e-9, facts)  # on, but too small to change any choice
    assert [t.text for t in tiny.tokens] == [t.text for t in plain.tokens]


@pytest.mark.parametrize("mode,beams", [("rag-token", 1), ("concat", 1), ("rag-token", 2), ("rag-sequence", 2)])
def test_an_unquoted_number_is_never_stated(gen, mode, beams):
    """Over many seeds of the random LM, the answers state years freely without the constraint, and
    with it only the year the chunks hold."""
    free, quoted = set(), set()
    for seed in range(6):
        g = tinylm.make_generator(seed=seed)
        free |= years_in(answers_with(g, mode, 0.0, tinylm.FACTS, n=16, beams=beams)[0].text)
        ans, hits = answers_with(g, mode, math.inf, [f + " 1867" for f in tinylm.FACTS], n=16, beams=beams)
        quoted |= years_in(ans.text)
        assert all(t.support is not None for t in ans.tokens)
    assert free & set(YEARS), "the random LM never stated a year: the test would prove nothing"
    assert quoted <= {"1867"}


# --- the contrast inside names and numbers ----------------------------------------------------------

DIGITS = ["", " The", " is", "5", "6", "7", " 19", " Y", " Bak", " Yere"]


def test_value_contrast_picks_the_digit_the_documents_raised(quotable):
    """After "19" the mixture prefers "6" (the model remembers 1962), the null document much more so:
    the contrast moves to "5", which the chunk raised; "7" (in no quoted number) never wins."""
    from assistant.quotes import value_contrast

    mix = torch.log(torch.tensor([1e-9, 0.01, 0.01, 0.3, 0.6, 0.07, 1e-3, 1e-3, 1e-3, 1e-3]))
    null = torch.log(torch.tensor([1e-9, 0.01, 0.01, 0.01, 0.95, 0.02, 1e-3, 1e-3, 1e-3, 1e-3]))
    assert value_contrast(mix, null, 4, "In 19", DIGITS, Quotable(["in 1958 and 1960"]), 1.0) == 3
    # by hand: "6": log .6 + (log .6 − log .95) = −0.97; "5": log .3 + (log .3 − log .01) = 2.20
    assert value_contrast(mix, null, 4, "In 19", DIGITS, Quotable(["in 1958 and 1960"]), 0.0) == 4  # α = 0: off
    assert value_contrast(mix, null, 4, "In 19", DIGITS, Quotable(["in 1960"]), 1.0) == 4  # 195.. is not quoted
    assert value_contrast(mix, null, 4, "In 19", DIGITS, Quotable(["in 1958 and 1960"]), 1.0, beta=0.6) == 4  # implausible


def test_value_contrast_leaves_other_words_alone(quotable):
    from assistant.quotes import value_contrast

    mix = torch.log(torch.tensor([1e-9, 0.5, 0.4, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01]))
    null = torch.log(torch.tensor([1e-9, 0.9, 0.01, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01]))
    assert value_contrast(mix, null, 1, "The capital", DIGITS, quotable, 5.0) == 1  # " The" is no name: plain RAG


def test_value_contrast_where_the_constraint_refused_a_name(quotable):
    """The mixture wants " Bak" (unquoted); the constraint's next best is " The"; the contrast then
    prefers the quoted name the chunk raised, " Yere", to a function word."""
    from assistant.quotes import value_contrast

    mix = torch.log(torch.tensor([1e-9, 0.2, 0.01, 0.01, 0.01, 0.01, 0.01, 0.1, 0.6, 0.05]))
    null = torch.log(torch.tensor([1e-9, 0.2, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.7, 0.001]))
    assert value_contrast(mix, null, 1, "The capital is", DIGITS, quotable, 1.0) == 9  # " Yere": + α · log 50
    assert value_contrast(mix, null, 1, "The capital is", DIGITS, quotable, 1.0, window=3) == 7  # " Y" ( + log 10 )


def test_a_capital_inside_a_word_only_as_the_texts_write_it():
    q = Quotable(["Schleiermacher met the iPhone makers in the USA."])
    assert q.admits("born in Schl", "ei") and not q.admits("born in Schl", "E")
    assert q.admits("the", " iPh") and not q.admits("the USA", "sI")


def test_value_contrast_only_where_the_documents_lowered_the_choice(quotable):
    """Where the documents agree with the memory (the mixture's "6" at least as likely as alone),
    the contrast would only favour another year the chunk mentions: it stays off."""
    from assistant.quotes import value_contrast

    mix = torch.log(torch.tensor([1e-9, 0.01, 0.01, 0.05, 0.9, 0.02, 1e-3, 1e-3, 1e-3, 1e-3]))
    null = torch.log(torch.tensor([1e-9, 0.01, 0.01, 0.001, 0.9, 0.05, 1e-3, 1e-3, 1e-3, 1e-3]))
    both = Quotable(["in 1958 and 1960"])
    assert value_contrast(mix, null, 4, "In 19", DIGITS, both, 1.0, beta=0.05) == 4
    lowered = torch.log(torch.tensor([1e-9, 0.01, 0.01, 0.001, 0.95, 0.02, 1e-3, 1e-3, 1e-3, 1e-3]))  # alone: "6" more
    assert value_contrast(mix, lowered, 4, "In 19", DIGITS, both, 1.0, beta=0.05) == 3
    assert value_contrast(mix, lowered, 4, "In 19", DIGITS, both, 1.0, beta=0.05, conflict=0.5) == 4


LANGUAGES = ["", " The", " is", " Pash", " Kurd", " Afghan", " 19", "5", " official"]


def _rows(*probs: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(probs))  # (rows, V)


def test_routing_lets_the_chunk_that_departs_from_the_memory_name_the_value():
    """Two chunks echo the model's memory (" Pash" as under ∅); the third, with less prior, states " Kurd".
    The plain mixture writes " Pash"; re-weighted by how far each chunk departs from ∅, " Kurd"."""
    from assistant.marginals import rag_token_marginalize
    from assistant.quotes import routed_scores

    memory = [1e-6, 0.05, 0.05, 0.8, 0.02, 0.02, 0.02, 0.02, 0.02 - 1e-6]
    informed = [1e-6, 0.05, 0.05, 0.05, 0.77, 0.02, 0.02, 0.02, 0.02 - 1e-6]
    rows = _rows(memory, memory, informed, memory)  # the chunks, then ∅
    prior = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    quotable = Quotable(["Kurdish and Pashto are the official languages of Afghanistan in 1958."],
                        question="What is an official language of Afghanistan?")
    scores = rag_token_marginalize(rows[:-1], prior)
    assert int(scores.argmax()) == 3  # " Pash": 0.8 · 0.8 + 0.2 · 0.05
    routed = routed_scores(scores, rows, prior, "The official language is", LANGUAGES, quotable, 3.5)
    assert int(routed.argmax()) == 4  # " Kurd"
    # by hand: the echoing chunks' JSD from ∅ is 0, so the informed one's weight is 0.2 · e^(3.5 · JSD) against 0.8
    jsd = float(jensen_shannon(rows[2], rows[3]))
    share = 0.2 * math.exp(3.5 * jsd) / (0.8 + 0.2 * math.exp(3.5 * jsd))
    assert math.exp(float(routed[4])) == pytest.approx(share * 0.77 + (1 - share) * 0.02, rel=1e-5)
    assert torch.equal(routed_scores(scores, rows, prior, "The official language is", LANGUAGES, quotable, 0.0), scores)


def test_routing_leaves_numbers_the_question_and_other_words_alone():
    from assistant.marginals import rag_token_marginalize
    from assistant.quotes import routed_scores

    quotable = Quotable(["Kurdish and Pashto are the official languages of Afghanistan in 1958."],
                        question="What is an official language of Afghanistan?")
    prior = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    for wanted, before in ((6, "It was in"), (5, "The language of"), (8, "Kurdish is an")):  # " 19", " Afghan", " official"
        memory = [1e-6] + [0.02] * 8
        memory[wanted] = 1 - 0.16 - 1e-6
        other = list(memory)
        other[wanted], other[4] = other[4], other[wanted]
        rows = _rows(memory, memory, other, memory)
        scores = rag_token_marginalize(rows[:-1], prior)
        assert int(scores.argmax()) == wanted
        assert torch.equal(routed_scores(scores, rows, prior, before, LANGUAGES, quotable, 3.5), scores), before


def test_quote_routing_is_validated():
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ConfigError, match="quote_routing"):
            AnswerConfig(quote_routing=bad)
