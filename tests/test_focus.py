"""The sentences a question points to (assistant/focus.py) by hand, and the quote constraint's
focus tier: the penalised argmax against a brute-force scan, and the modes' contract on the tiny LM."""

import math
import random
import re
from dataclasses import replace

import pytest
import torch

from assistant.config import AnswerConfig, ModeTables
from assistant.engine import load_mode
from assistant.focus import content_words, focus_by_text, focus_sentences, sentence_scores, sentences, stems_match
from assistant.prompts import FOCUS_LABEL, chunk_context, chunk_contexts
from assistant.quotes import Quotable, quoted_top
from knowledge.errors import ConfigError
from knowledge.types import Chunk, Hit
from tests import tinylm

ARTICLE = ("Albert Einstein was born in Augsburg in 1876. Einstein moved to Berlin in 1914. "
           "Einstein died in Princeton in 1955.\nEinstein won the Nobel Prize in 1921.")


def test_sentences_split_at_ends_and_line_breaks_but_not_inside_abbreviations():
    assert sentences(ARTICLE) == ["Albert Einstein was born in Augsburg in 1876.", "Einstein moved to Berlin in 1914.",
                                  "Einstein died in Princeton in 1955.", "Einstein won the Nobel Prize in 1921."]
    assert sentences("The Principality was formed in A.D. 1302, by a treaty.") == [
        "The Principality was formed in A.D. 1302, by a treaty."]


@pytest.mark.parametrize("a,b,same", [
    ("die", "died", True), ("publish", "published", True), ("assassinated", "assassination", True),
    ("born", "border", False), ("in", "inside", False), ("city", "city", True), ("fame", "famous", False),
    ("8", "8", True), ("8", "80", False),
])
def test_stems_match_by_hand(a, b, same):
    assert stems_match(a, b) is same and stems_match(b, a) is same


def test_content_words_drop_function_and_question_words():
    assert content_words("In which city was Albert Einstein born? Einstein!") == ["city", "albert", "einstein", "born"]
    assert content_words("In what year did Apollo 8 launch?") == ["apollo", "8", "launch"]


def test_sentence_scores_are_sums_of_inverse_sentence_frequencies():
    candidates = sentences(ARTICLE)  # 4 sentences: "einstein" in all, "born" in 1, "albert" in 1
    idf = lambda n_t: math.log((4 + 1) / (n_t + 0.5))  # noqa: E731
    got = sentence_scores(["einstein", "born", "albert", "city"], candidates)
    assert got == pytest.approx([idf(4) + idf(1) + idf(1), idf(4), idf(4), idf(4)])


def test_a_question_asking_for_a_number_points_to_a_sentence_with_a_digit():
    texts = ["Albert Einstein was a German-born physicist. Born in Ulm in 1876, he developed relativity.",
             "He died in Princeton in 1955."]
    assert focus_sentences("Who was Albert Einstein?", texts) == ["Albert Einstein was a German-born physicist."]
    assert focus_sentences("In what year was Albert Einstein born?", texts) == [
        "Born in Ulm in 1876, he developed relativity."]  # not the sentence with more of the question's words
    assert focus_sentences("How many prizes did Albert Einstein win?", ["Albert Einstein won prizes."]) == [
        "Albert Einstein won prizes."]  # no sentence with a digit: the words alone decide


def test_the_focus_is_the_sentence_about_what_was_asked():
    assert focus_sentences("In which city was Albert Einstein born?", [ARTICLE]) == [
        "Albert Einstein was born in Augsburg in 1876."]
    assert focus_sentences("When did Einstein die?", [ARTICLE]) == ["Einstein died in Princeton in 1955."]
    assert focus_sentences("Where did Einstein move to?", [ARTICLE, "Berlin is a city."]) == [
        "Einstein moved to Berlin in 1914."]


def test_a_lower_ratio_keeps_the_runners_up_and_no_overlap_keeps_nothing():
    two = focus_sentences("When was Einstein born and when did he die?", [ARTICLE], ratio=0.5)
    assert two == ["Albert Einstein was born in Augsburg in 1876.", "Einstein died in Princeton in 1955."]
    assert focus_sentences("What is the weather like?", [ARTICLE]) == []
    assert focus_sentences("Who?", [ARTICLE]) == [] and focus_sentences("When was he born?", []) == []


# --- the tier of the quote constraint -----------------------------------------------------------------

QUESTION = "In which city was Albert Einstein born?"


@pytest.fixture(scope="module")
def quotable():
    focus = Quotable(focus_sentences(QUESTION, [ARTICLE]) + [QUESTION])
    return Quotable([ARTICLE, QUESTION], focus=focus)


@pytest.mark.parametrize("before,piece,tier", [
    ("He was born in", " Augsburg", 0), ("He was born in", " Princeton", 1), ("He was born in", " Ulm", 2),
    ("Born in 18", "76", 0), ("Born in 19", "55", 1), ("Born in 18", "79", 2),
    ("Born in", " 19", 1),  # "19" begins only the other sentences' years
    ("Born in", " 1", 0), ("Albert", " Einstein", 0), ("He was", " born", 0),  # the question's words; lowercase words
])
def test_tier_by_hand(quotable, before, piece, tier):
    assert quotable.tier(before, piece) == tier


def test_without_a_focus_every_quoted_word_is_tier_zero():
    plain = Quotable([ARTICLE])
    assert plain.tier("He was born in", " Princeton") == 0 and plain.tier("He was born in", " Ulm") == 2


PIECES = ["", " Augsburg", " Princeton", " Ulm", " 18", " 19", "76", "55", "79", ".", " in", " Berlin", " Ein", "stein"]


def brute_force_top(scores, before, quotable, penalties, n):
    ranked = []
    for token, value in enumerate(scores.tolist()):
        final = token == 0
        score = value - penalties[quotable.tier(before, "" if final else PIECES[token], final)]
        if score > -math.inf:
            ranked.append((score, token))
    ranked.sort(key=lambda r: -r[0])
    return [(t, s) for s, t in ranked[:n]]


@pytest.mark.parametrize("focus_penalty", [0.0, 0.5, 2.0, 8.0])
def test_quoted_top_with_a_focus_is_the_penalised_top_n_over_the_whole_vocabulary(quotable, focus_penalty):
    rng = random.Random(0)
    for trial in range(150):
        scores = torch.randn(len(PIECES), generator=torch.Generator().manual_seed(trial)) * 3
        before = rng.choice(["He was born in", "Born in 18", "Born in 19", "Albert", "He died in"])
        n = rng.choice([1, 3])
        got = quoted_top(scores, before, PIECES, quotable, math.inf, {0}, n, focus_penalty)
        want = brute_force_top(scores, before, quotable, (0.0, focus_penalty, math.inf), n)
        assert [t for t, _ in got] == [t for t, _ in want], (trial, before)
        assert [s for _, s in got] == pytest.approx([s for _, s in want])


def test_focus_settings_are_validated():
    with pytest.raises(ConfigError, match="quote_focus_penalty"):
        AnswerConfig(quote_focus_penalty=-1.0)
    with pytest.raises(ConfigError, match="quote_focus_ratio"):
        AnswerConfig(quote_focus_ratio=0.0)
    with pytest.raises(ConfigError, match="quote_focus_ratio"):
        AnswerConfig(quote_focus_ratio=1.5)


# --- the modes' contract on the tiny LM -------------------------------------------------------------------

PLAIN = {"context_weight": 0.0, "plausibility": 0.0, "prior_question_weight": 0.0}
# each chunk: the sentence the question asks about (a year), then another sentence with another year
FACTS = [
    "ada lovelace was born in london 1815\nshe wrote the first program 1912",
    "marie curie was born in warsaw 1867\nshe discovered radium and polonium 1912",
    "alan turing was born in london 1912\nhe was a mathematician 1815",
]


def year_prone_generator(seed):
    """The tiny random LM with its output rows of the years scaled up, so that it states years often."""
    gen = tinylm.make_generator(seed=seed)
    head = gen.model.get_output_embeddings().weight  # (V, d)
    with torch.no_grad():
        for year in ("1815", "1867", "1912"):
            head[gen.tokenizer.convert_tokens_to_ids(year)] *= 8
    return gen


def answers_with(gen, mode, focus_penalty, beams=1, n=16):
    question = tinylm.QUESTION
    hits = tinylm.OverlapRetriever(tinylm.make_chunks(FACTS)).search(question, 3)
    config = AnswerConfig(k=3, max_new_tokens=n, quote_penalty=math.inf, quote_focus_penalty=focus_penalty, **PLAIN)
    if beams > 1:
        key = "beams" if mode == "rag-sequence" else "beam_size"
        config = replace(config, modes=ModeTables({mode: {key: beams}}))
    return load_mode(mode, gen, config).answer(question, [], hits)


@pytest.mark.parametrize("mode,beams", [("rag-token", 1), ("concat", 1), ("rag-token", 2), ("rag-sequence", 2)])
def test_a_strong_focus_states_only_the_years_of_the_sentences_about_the_question(mode, beams):
    """"where was marie curie born ?" points to her chunk's first line: with a large focus penalty
    the answers state only its year, 1867, never the other lines' years (all quotable); with the
    focus off they do state those."""
    assert focus_sentences(tinylm.QUESTION, FACTS) == ["marie curie was born in warsaw 1867"]
    free, focused = set(), set()
    for seed in range(6):
        g = year_prone_generator(seed)
        free |= set(re.findall(r"\d+", answers_with(g, mode, 0.0, beams).text))
        focused |= set(re.findall(r"\d+", answers_with(g, mode, 1e6, beams).text))
    assert free - {"1867"}, "the random LM stated no other year: the test would prove nothing"
    assert focused <= {"1867"}


def test_a_question_that_points_to_no_sentence_gets_no_focus():
    from assistant.modes.grounded import quotable_of

    gen = tinylm.make_generator()
    hits = tinylm.OverlapRetriever(tinylm.make_chunks(FACTS)).search(tinylm.QUESTION, 3)
    on = AnswerConfig(quote_penalty=math.inf, quote_focus_penalty=1.0)
    assert quotable_of(gen, hits, tinylm.QUESTION, on).focus is not None
    nothing_shared = quotable_of(gen, hits, "tell me about it ?", on)
    assert nothing_shared.focus is None and nothing_shared.tier("born in", " 1912") == 0
    assert quotable_of(gen, hits, tinylm.QUESTION, replace(on, quote_focus_penalty=0.0)).focus is None


# --- the focus restated in the prompts (answer.context_focus) ------------------------------------------------

def test_focus_by_text_gives_each_text_its_own_sentences_of_the_focus_over_all_of_them():
    texts = ["Einstein moved to Berlin in 1914. Albert Einstein was born in Augsburg in 1876.",
             "Einstein died in Princeton in 1955.", "Einstein won the Nobel Prize in 1921."]
    assert focus_by_text("Where was Einstein born?", texts) == [["Albert Einstein was born in Augsburg in 1876."], [], []]
    assert focus_by_text("When did Einstein move or die?", texts, 0.5) == [["Einstein moved to Berlin in 1914."],
                                                                           ["Einstein died in Princeton in 1955."], []]
    assert focus_by_text("Tell me about it?", texts) == [[], [], []]  # no content word shared: no focus
    assert [s for own in focus_by_text("Where was Einstein born?", texts, 0.2) for s in own] == \
        focus_sentences("Where was Einstein born?", texts, 0.2)


def test_each_chunk_prompt_restates_its_own_focus_sentences_after_the_chunk():
    hits = tinylm.OverlapRetriever(tinylm.make_chunks(FACTS)).search(tinylm.QUESTION, 3)
    on = AnswerConfig(context_focus=True)
    contexts = chunk_contexts(hits, tinylm.QUESTION, on)
    marie = next(i for i, h in enumerate(hits) if "marie" in h.chunk.text)
    for i, (hit, context) in enumerate(zip(hits, contexts)):
        plain = chunk_context(hit, on.chunk_chars)
        if i == marie:
            assert context == plain + f"\n\n{FOCUS_LABEL} marie curie was born in warsaw 1867"
        else:
            assert context == plain  # the focus is in another chunk: nothing restated here
    assert chunk_contexts(hits, tinylm.QUESTION, replace(on, context_focus=False)) == [
        chunk_context(h, on.chunk_chars) for h in hits]
    text = "pierre curie was a physicist\nmarie curie was born in warsaw 1867"
    long = Hit(Chunk("c9", "doc9.md", 0, len(text), text, ("Doc 9",)), 1.0)
    cut = chunk_contexts([long], tinylm.QUESTION, replace(on, chunk_chars=12))[0]
    assert cut == f"Doc 9\npierre curie\n\n{FOCUS_LABEL} marie curie "  # restated past the cut, as long as the cut


def with_focus_appended(hit, focus):
    chunk = hit.chunk
    text = chunk.text + f"\n\n{FOCUS_LABEL} " + " ".join(focus) if focus else chunk.text
    return Hit(Chunk(chunk.chunk_id, chunk.doc_id, chunk.start, chunk.start + len(text), text, chunk.heading_path),
               hit.score)


@pytest.mark.parametrize("mode,beams", [("rag-token", 1), ("concat", 1), ("rag-token", 2), ("rag-sequence", 2)])
def test_every_mode_decodes_the_chunks_with_their_focus_restated(mode, beams):
    """With context_focus on, a mode answers exactly as it does, off, over chunks whose text ends with
    their focus sentences: the restated sentence is in the prompts it decodes, and nowhere else."""
    gen = tinylm.make_generator()
    hits = tinylm.OverlapRetriever(tinylm.make_chunks(FACTS)).search(tinylm.QUESTION, 3)
    config = AnswerConfig(k=3, max_new_tokens=12, quote_penalty=0.0, **PLAIN)
    if beams > 1:
        key = "beams" if mode == "rag-sequence" else "beam_size"
        config = replace(config, modes=ModeTables({mode: {key: beams}}))
    focus = focus_by_text(tinylm.QUESTION, [h.chunk.text for h in hits], config.quote_focus_ratio)
    appended = [with_focus_appended(h, f) for h, f in zip(hits, focus)]
    on = load_mode(mode, gen, config).answer(tinylm.QUESTION, [], hits)
    off = load_mode(mode, gen, replace(config, context_focus=False))
    assert [(t.text, t.prob) for t in on.tokens] == [(t.text, t.prob) for t in off.answer(tinylm.QUESTION, [], appended).tokens]
    plain = off.answer(tinylm.QUESTION, [], hits)
    assert [(t.text, t.prob) for t in plain.tokens] != [(t.text, t.prob) for t in on.tokens]  # the restatement is read
