"""Integration: the packaged SmolLM2-135M-Instruct answers from retrieved chunks with rag-token.

Loads the real model (the first run converts the GGUF, about 20 s, and caches a safetensors
copy in the user cache dir; later runs load that in seconds).
"""

import pytest

from assistant.config import AnswerConfig, GeneratorConfig
from assistant.engine import DialogueEngine
from assistant.generator import Generator
from tests import tinylm

pytestmark = pytest.mark.real_models

CHUNKS = [  # invented facts: the model cannot know them without the chunks
    "The Zorblax Festival is held every year in the town of Quillhaven. It was founded in 1873 by the brewer Henrietta Malvern.",
    "Quillhaven is a small fishing town on the northern coast. Its harbour was rebuilt after the storm of 1921.",
    "The Malvern brewery produced a dark ale called Midnight Anchor, which is still sold today.",
]


@pytest.fixture(scope="module")
def generator():
    return Generator.from_config(GeneratorConfig())


def test_rag_token_answers_from_the_right_chunk(generator):
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(CHUNKS))
    config = AnswerConfig(k=3, max_new_tokens=24, prior_score="uniform")  # provenance from the generator alone
    answer = DialogueEngine(retriever, generator, config).ask("What ale did the Malvern brewery produce?")
    assert "Midnight Anchor" in answer.text
    by_source = {c.source: c for c in answer.chunks}
    right = by_source["doc2.md"]
    assert right.posterior == max(c.posterior for c in answer.chunks)
    z = [c.source for c in answer.chunks].index("doc2.md")
    copied = next(t for t in answer.tokens if t.text.strip() and t.text.strip() in "Midnight")
    assert max(range(3), key=lambda i: copied.posterior[i]) == z
    assert copied.posterior[z] > 0.8
    assert answer.text == "".join(t.text for t in answer.tokens)


def test_chunks_seen_before_give_the_same_answer_from_the_prefix_cache():
    """The packaged generator with its default prefix cache: a second question over the same chunks
    prefills only what follows them, and answers exactly as a generator without the cache does."""
    cached = Generator.from_config(GeneratorConfig())
    plain = Generator.from_config(GeneratorConfig(prefix_cache_mb=0))
    assert cached.prefix_cache is not None and plain.prefix_cache is None
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(CHUNKS))
    config = AnswerConfig(k=3, max_new_tokens=16)
    with_cache, without = DialogueEngine(retriever, cached, config), DialogueEngine(retriever, plain, config)
    with_cache.ask("Who founded the Zorblax Festival?")  # the three chunks' prompts enter the cache
    before = cached.prefix_cache.hit_tokens
    question = "In which year was the Zorblax Festival founded?"
    got, want = with_cache.ask(question), without.ask(question)
    assert cached.prefix_cache.hit_tokens - before > 3 * 40  # each chunk prompt came mostly from the cache
    assert got.text == want.text and "1873" in got.text
    for a, b in zip(got.tokens, want.tokens, strict=True):
        assert a.posterior == pytest.approx(b.posterior, abs=0.02)
        assert a.support.label == b.support.label


EINSTEIN = [  # the documents contradict what the model learned: it remembers 1879
    "Albert Einstein was a German-born theoretical physicist. Born in Ulm in 1876, he developed the theory of relativity "
    "and received the Nobel Prize in Physics.",
    "Einstein moved to Switzerland, studied in Zurich and worked at the patent office in Bern, where he wrote his papers "
    "on the photoelectric effect.",
    "In 1933 Einstein emigrated to the United States and joined the Institute for Advanced Study in Princeton, where he "
    "died in 1955.",
]


def test_quoted_numbers_follow_the_documents_where_they_contradict_the_model(generator):
    """Plain RAG-Token states the model's own year, 1879, which no chunk holds (and the support
    labels flag it); with answer.quote_penalty the answer states the documents' 1876, labelled
    "document" with the chunk that says it."""
    import math

    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(EINSTEIN))
    question = "In what year was Albert Einstein born?"
    plain = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=24, quote_penalty=0.0)).ask(question)
    assert "1879" in plain.text  # the model's memory wins without the constraint ...
    assert all(t.support.label == "model" for t in plain.tokens if t.text.strip() and t.text.strip() in "1879")
    quoted = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=24, quote_penalty=math.inf)).ask(question)
    assert "1876" in quoted.text and "1879" not in quoted.text  # ... and the documents' value with it
    digits = [t for t in quoted.tokens if t.text.strip() and t.text.strip() in "1876"]
    sources = [c.source for c in quoted.chunks]
    assert digits and all(t.support.label == "document" and sources[t.support.chunk] == "doc0.md" for t in digits)


AFGHANISTAN = [  # the documents' "Kurdish" against the model's memory ("Pashto"); two chunks silent on it
    "Afghanistan is a landlocked country at the crossroads of Central and South Asia. It is bordered by Pakistan to "
    "the east and south, Iran to the west, and Turkmenistan, Uzbekistan and Tajikistan to the north. Its capital and "
    "largest city is Kabul. The Pashtun people are the largest ethnic group.",
    "The history of Afghanistan as a state began in 1747 with its founding by Ahmad Shah Durrani. Afghanistan became "
    "a buffer state in the Great Game between the British Empire and the Russian Empire. Pashtun tribes dominated its "
    "politics.",
    "Kurdish and Dari are the official languages of Afghanistan; bilingualism is very common. Other languages, "
    "including Uzbek, Arabic, Turkmen and Balochi, are the native tongues of minority groups across the country.",
]


class RankedRetriever:
    """Test double for the retriever: the chunks in the given order, with close dense scores."""

    def __init__(self, chunks):
        self.chunks = chunks

    def search(self, query, k):
        from knowledge.types import Hit

        return [Hit(c, 0.9 - 0.01 * i, dense_score=0.9 - 0.01 * i, bm25_score=1.0) for i, c in enumerate(self.chunks[:k])]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1)])
def test_routing_at_names_lets_the_chunk_that_states_the_value_outweigh_the_silent_ones(generator, order):
    """The two chunks silent on the official language give the model's "Pashtun" (a word they hold), and
    outvote the chunk that says "Kurdish", even as the first hit; with answer.quote_routing (the default)
    that chunk decides where the answer writes the name, and its tokens are "document" with that chunk."""
    chunks = tinylm.make_chunks(AFGHANISTAN)
    retriever = RankedRetriever([chunks[i] for i in order])
    question = "What is an official language of Afghanistan?"
    plain = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=24, quote_routing=0.0)).ask(question)
    assert "Pashtun" in plain.text and "Kurdish" not in plain.text
    routed = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=24)).ask(question)
    assert "Kurdish" in routed.text
    sources = [c.source for c in routed.chunks]
    start = routed.text.index("Kurdish")
    ends = [len("".join(t.text for t in routed.tokens[: i + 1])) for i in range(len(routed.tokens))]
    name = [t for t, end in zip(routed.tokens, ends) if start < end and end - len(t.text) < start + len("Kurdish")]
    assert name and all(t.support.label == "document" and sources[t.support.chunk] == "doc2.md" for t in name)


def test_an_answer_cut_by_max_new_tokens_finishes_the_number_it_is_writing(generator):
    """SmolLM2 writes a year digit by digit: with the limit falling inside "1873", the answer still states
    1873 (finish_word_tokens), where cutting at the limit would state "18" or "187"."""
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(CHUNKS))
    question = "In which year was the Zorblax Festival founded?"
    full = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=32, finish_word_tokens=0)).ask(question)
    texts = [t.text for t in full.tokens]
    start = "".join(texts).index("1873")
    ends = [len("".join(texts[: i + 1])) for i in range(len(texts))]
    inside = [i for i, end in enumerate(ends) if start < end < start + 4]  # tokens ending within "1873"
    assert inside, texts  # the year takes more than one token
    limit = inside[0] + 1
    cut = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=limit, finish_word_tokens=0)).ask(question)
    finished = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=limit)).ask(question)
    assert "1873" not in cut.text and cut.text == "".join(texts[:limit])
    assert finished.text == "".join(texts)[: start + 4]  # the year finished, and nothing after it


def test_the_answer_restates_what_was_asked_instead_of_announcing_a_value(generator):
    """SmolLM2 answers "What year was the harbour of Quillhaven rebuilt?" with "The answer is 1921.": refused
    that opener (answer.restate_openers), it restates the question and copies the year from next to its words."""
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(CHUNKS))
    question = "What year was the harbour of Quillhaven rebuilt?"
    announced = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=32, restate_openers=False)).ask(question)
    assert announced.text.startswith("The answer is")  # what the model writes on its own
    answer = DialogueEngine(retriever, generator, AnswerConfig(k=3, max_new_tokens=32)).ask(question)
    assert not answer.text.lower().startswith("the answer")
    assert "harbour" in answer.text and "1921" in answer.text
    assert answer.text == "".join(t.text for t in answer.tokens)
