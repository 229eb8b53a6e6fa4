"""The BM25 index: cross-checked against bm25s and rank-bm25, exact under adds and removes, persisted safely."""

from __future__ import annotations

import math
import random

import bm25s
import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from knowledge.bm25 import BM25Index
from knowledge.errors import IndexUnusableError
from knowledge.text_tokens import tokenize

TEXTS = [
    "Python uses indentation to group statements; a block ends where the indentation decreases.",
    "The os.path module joins, splits and normalizes file system paths on every platform.",
    "A list comprehension builds a new list from an iterable in a single readable expression.",
    "Dictionaries map hashable keys to values and keep insertion order since Python 3.7.",
    "The global interpreter lock lets only one thread execute Python bytecode at a time.",
    "Use the multiprocessing module to run CPU-bound work in several processes in parallel.",
    "Floating-point numbers are stored in binary, so 0.1 + 0.2 is not exactly 0.3.",
    "The decimal module offers exact decimal arithmetic for money and other base-10 quantities.",
    "Generators produce values lazily with yield and keep their state between calls.",
    "A context manager defines __enter__ and __exit__ and is used with the with statement.",
    "Exceptions propagate up the call stack until an except clause handles them.",
    "Virtual environments isolate the packages of one project from those of another project.",
    "pip installs packages from the Python Package Index into the active environment.",
    "Type hints document the expected types of arguments and return values of functions.",
    "The dataclasses module generates __init__, __repr__ and __eq__ for classes with fields.",
    "Regular expressions in the re module match patterns in strings, with groups and flags.",
    "The json module encodes Python objects as JSON text and decodes JSON back to objects.",
    "Unit tests with pytest use plain assert statements and fixtures for shared setup.",
    "asyncio runs coroutines on an event loop; await suspends a coroutine until a result is ready.",
    "Threads share memory, so access to shared data needs locks or queues to stay consistent.",
    "Knead the bread dough for ten minutes until it is smooth and elastic, then let it rise.",
    "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria instead of baker's yeast.",
    "Simmer the tomato sauce slowly with garlic, olive oil and basil for a deep flavour.",
    "Roast the vegetables at a high temperature so their edges caramelize and turn crisp.",
    "A sharp knife is safer than a dull one because it needs less force to cut.",
    "Salt the pasta water generously; the pasta absorbs flavour while it boils.",
    "Whisk egg whites in a clean bowl until they form stiff peaks for a light meringue.",
    "Resting meat after roasting lets the juices redistribute before you slice it.",
    "Fresh herbs like parsley and basil are added at the end of cooking to keep their aroma.",
    "Butter and flour cooked together make a roux that thickens sauces and soups.",
    "Jupiter is the largest planet of the solar system, a gas giant with a great red storm.",
    "Saturn's rings are made of ice and rock particles orbiting the planet in a thin disc.",
    "A light year is the distance light travels in one year, about 9.46 trillion kilometres.",
    "The Moon always shows the same face to the Earth because its rotation is tidally locked.",
    "Stars fuse hydrogen into helium in their cores and release energy as light.",
    "A black hole is a region where gravity is so strong that not even light escapes.",
    "Telescopes collect light with lenses or mirrors to reveal faint and distant objects.",
    "Mars has the tallest volcano of the solar system, Olympus Mons, and two small moons.",
    "Comets are icy bodies whose tails point away from the Sun, pushed by the solar wind.",
    "The Milky Way is a barred spiral galaxy containing hundreds of billions of stars.",
    "Tomatoes need full sun, regular watering and support as the plants grow tall.",
    "Compost turns kitchen scraps and garden waste into rich soil for the vegetable beds.",
    "Prune roses in late winter, cutting just above an outward-facing bud.",
    "Mulch keeps the soil moist, suppresses weeds and feeds the garden as it decays.",
    "Bees pollinate fruit trees and vegetables; plant flowers to attract them to the garden.",
    "Rotate crops each year so pests and diseases of one plant family do not build up in the soil.",
    "Water the garden early in the morning so less water evaporates in the heat of the day.",
    "Seeds of lettuce and radish germinate quickly in cool spring soil.",
    "The Roman Empire built roads, aqueducts and cities across Europe and the Mediterranean.",
    "The printing press of Gutenberg spread books and ideas across Europe in the fifteenth century.",
]
IDS = [f"doc{i:02d}.md#0" for i in range(len(TEXTS))]
QUERIES = [
    "python threads lock",
    "bread yeast rises",
    "light of the stars",
    "solar system planet",
    "garden soil water",
    "exact decimal arithmetic",
    "how do I install packages with pip",
    "sauce sauce basil",  # a repeated query term counts twice, as in bm25s and rank-bm25
    "unknownword python",
]


def build(pairs, **params) -> BM25Index:
    index = BM25Index(**params)
    index.add_many(pairs)
    return index


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return build(zip(IDS, TEXTS))


# ---- the tokenizer -------------------------------------------------------------------------


def test_tokenize_lowercases_keeps_identifiers_drops_stopwords_and_plurals():
    assert tokenize("The os.path module's __init__ and MAX_SIZE") == [
        "os", "path", "module", "s", "__init__", "max_size"
    ]
    assert tokenize("classes types queries status os args") == ["class", "type", "query", "status", "os", "arg"]
    assert tokenize("Ünïcode café 3.11") == ["ünïcode", "café", "3", "11"]
    assert tokenize("the a an is of") == []


# ---- cross-checks against reference implementations -----------------------------------------


@pytest.mark.parametrize("k1, b", [(1.5, 0.75), (1.2, 0.3), (0.9, 1.0)])
def test_scores_equal_bm25s_lucene(k1, b):
    ours = build(zip(IDS, TEXTS), k1=k1, b=b)
    ref = bm25s.BM25(method="lucene", k1=k1, b=b)
    ref.index([tokenize(t) for t in TEXTS], show_progress=False)  # identical tokens
    for query in QUERIES:
        expected = ref.get_scores(tokenize(query))  # (N,)
        got = ours.scores(query)
        assert any(got), query
        np.testing.assert_allclose([got.get(i, 0.0) for i in IDS], expected, atol=1e-4, err_msg=query)


def test_single_term_scores_are_rank_bm25_times_a_constant(index):
    """rank-bm25's BM25Okapi has idf = ln((N - df + 0.5) / (df + 0.5)) and a (k1 + 1) factor; for one
    term both are constants, so its scores are ours times a constant and the ranking is the same."""
    ref = BM25Okapi([tokenize(t) for t in TEXTS], k1=1.5, b=0.75)
    n = len(TEXTS)
    for term in ["garden", "light", "python", "bread"]:
        df = sum(term in tokenize(t) for t in TEXTS)
        ratio = math.log((n - df + 0.5) / (df + 0.5)) * 2.5 / math.log(1 + (n - df + 0.5) / (df + 0.5))
        ours = index.scores(term)
        theirs = ref.get_scores([term])
        assert len(ours) == df == np.count_nonzero(theirs)
        for cid, score in ours.items():
            assert theirs[IDS.index(cid)] == pytest.approx(score * ratio, rel=1e-6)


def test_easy_multi_term_query_has_rank_bm25s_top_hits(index):
    ref = BM25Okapi([tokenize(t) for t in TEXTS], k1=1.5, b=0.75)
    for query, expected in [("sourdough starter yeast", "doc21.md#0"), ("decimal money arithmetic", "doc07.md#0")]:
        assert IDS[int(np.argmax(ref.get_scores(tokenize(query))))] == expected
        assert index.search(query, 1)[0][0] == expected


# ---- exact under adds, edits and removes -----------------------------------------------------


def assert_same_as_fresh(index: BM25Index, live: dict[str, str]) -> None:
    fresh = build(live.items())
    assert len(index) == len(live) and index.ids() == set(live)
    for query in QUERIES:
        got, want = index.scores(query), fresh.scores(query)
        assert got.keys() == want.keys(), query
        for cid in want:
            assert got[cid] == pytest.approx(want[cid], rel=1e-12, abs=1e-12), (query, cid)
        assert index.search(query, 5) == fresh.search(query, 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_adds_edits_removes_equal_a_fresh_build(seed):
    rng = random.Random(seed)
    index, live = BM25Index(), {}
    for step in range(300):
        op = rng.random()
        if op < 0.45 or not live:  # add new ids, or re-add removed ones, in a batch
            batch = [(f"c{rng.randrange(80)}", rng.choice(TEXTS)) for _ in range(rng.randint(1, 6))]
            index.add_many(batch)
            live.update(batch)
        elif op < 0.6:  # edit: same id, other text
            cid = rng.choice(sorted(live))
            live[cid] = rng.choice(TEXTS) + " edited " + rng.choice(TEXTS)
            index.add(cid, live[cid])
        elif op < 0.75:
            cid = rng.choice(sorted(live))
            index.remove(cid)
            del live[cid]
        else:  # remove many, some of them not indexed
            gone = rng.sample(sorted(live), rng.randint(1, len(live))) + ["never-added"]
            index.remove_many(gone)
            for cid in gone:
                live.pop(cid, None)
        if step % 25 == 0:
            assert_same_as_fresh(index, live)
    assert_same_as_fresh(index, live)


def test_removing_most_documents_then_adding_stays_exact():
    index = build(zip(IDS, TEXTS))
    index.remove_many(IDS[:40])  # > 25% dead: compacted
    live = dict(zip(IDS[40:], TEXTS[40:]))
    assert_same_as_fresh(index, live)
    index.add_many(zip(IDS[:10], TEXTS[:10]))
    live.update(zip(IDS[:10], TEXTS[:10]))
    assert_same_as_fresh(index, live)


def test_removing_everything_then_adding_stays_exact():
    index = build(zip(IDS, TEXTS))
    index.remove_many(IDS)
    assert len(index) == 0 and index.search("python", 3) == []
    index.add_many(zip(IDS[:3], TEXTS[:3]))
    index.remove(IDS[1])
    assert_same_as_fresh(index, {IDS[0]: TEXTS[0], IDS[2]: TEXTS[2]})


def test_add_existing_id_replaces_and_remove_unknown_id_raises():
    small = build([("a", "python threads"), ("b", "bread yeast")])
    small.add("a", "garden soil")
    assert len(small) == 2 and small.search("python", 5) == [] and small.search("garden", 5)[0][0] == "a"
    assert "a" in small and "zzz" not in small
    with pytest.raises(KeyError):
        small.remove("zzz")


def test_ties_are_broken_by_chunk_id_whatever_the_insertion_order():
    pairs = [(f"id{i}", "same text about gardens") for i in range(6)] + [("other", "nothing alike")]
    forward, backward = build(pairs), build(reversed(pairs))
    assert forward.search("garden", 3) == backward.search("garden", 3)
    assert [cid for cid, _ in forward.search("garden", 3)] == ["id0", "id1", "id2"]


# ---- search edge cases and filters -----------------------------------------------------------


def test_empty_index_stopword_and_unknown_queries_return_nothing(index):
    assert BM25Index().search("python", 5) == []
    assert index.search("the of and is", 5) == []
    assert index.search("zyxxy qwerty", 5) == []
    assert index.search("python", 0) == []
    with pytest.raises(ValueError):
        index.search("python", -1)


def test_search_returns_top_k_best_first_with_positive_scores(index):
    hits = index.search("solar system planet light", 4)
    scores = [s for _, s in hits]
    assert len(hits) == 4 and scores == sorted(scores, reverse=True) and min(scores) > 0
    everything = sorted(index.scores("solar system planet light").items(), key=lambda h: (-h[1], h[0]))
    assert hits == everything[:4]


@pytest.mark.parametrize("wanted", [{"doc33.md#0"}, set(IDS[30:40]), set(IDS[::2])])
def test_allowed_filter_keeps_only_accepted_ids_in_rank_order(index, wanted):
    calls = []

    def allowed(cid: str) -> bool:
        calls.append(cid)
        return cid in wanted

    query = "light of the stars in the solar system garden"
    expected = [h for h in index.search(query, len(TEXTS)) if h[0] in wanted][:3]
    assert index.search(query, 3, allowed=allowed) == expected
    assert len(calls) == len(set(calls)) <= len(index.scores(query))  # matching ids only, each once


# ---- persistence ---------------------------------------------------------------------------


def test_save_load_round_trip_then_keeps_following_changes(tmp_path, index):
    edited = build(zip(IDS, TEXTS))
    edited.remove_many(IDS[:5])  # dead slots are dropped on save
    path = tmp_path / "sub" / "bm25.npz"
    edited.save(path)
    loaded = BM25Index.load(path)
    assert (loaded.k1, loaded.b) == (edited.k1, edited.b)
    live = dict(zip(IDS[5:], TEXTS[5:]))
    assert_same_as_fresh(loaded, live)
    loaded.add_many([("new", "bread and garden soil"), (IDS[6], "edited python text")])
    loaded.remove(IDS[7])
    live.update([("new", "bread and garden soil"), (IDS[6], "edited python text")])
    del live[IDS[7]]
    assert_same_as_fresh(loaded, live)
    assert [p.name for p in path.parent.iterdir()] == ["bm25.npz"]  # no temporary file left


def test_empty_index_round_trips(tmp_path):
    BM25Index().save(tmp_path / "e.npz")
    loaded = BM25Index.load(tmp_path / "e.npz")
    assert len(loaded) == 0 and loaded.search("python", 3) == []


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not an index at all"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.unlink(),
        lambda p: _rewrite(p, format_version=np.array(999)),
        lambda p: _rewrite(p, tokenizer=np.array("another-tokenizer")),
        lambda p: _rewrite(p, slots=np.array([10_000], np.int32)),
        lambda p: _rewrite(p, indptr=np.array([0, 1])),
    ],
    ids=["garbage", "truncated", "missing", "version", "tokenizer", "bad-postings", "bad-offsets"],
)
def test_unusable_file_raises_index_error_saying_to_reindex(tmp_path, index, damage):
    path = tmp_path / "bm25.npz"
    index.save(path)
    damage(path)
    with pytest.raises(IndexUnusableError, match="footnotes reindex"):
        BM25Index.load(path)
