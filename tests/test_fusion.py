"""Fusion functions with hand-computed values, and the retriever using each registered fusion."""

from __future__ import annotations

import dataclasses

import pytest

from knowledge.config import RetrievalConfig
from knowledge.fusion import FUSIONS, complete_scores, convex_tmm, rrf, weighted_minmax, weighted_rrf, with_missed
from tests.conftest import small_config

DENSE = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
SPARSE = [("b", 10.0), ("d", 0.0)]


def test_weighted_rrf_by_hand():
    fused = weighted_rrf([DENSE, SPARSE], [0.75, 0.25], k=10)
    assert fused == pytest.approx({"a": 0.75 / 11, "b": 0.75 / 12 + 0.25 / 11, "c": 0.75 / 13, "d": 0.25 / 12})


def test_plain_rrf_ignores_the_weights():
    assert rrf([DENSE, SPARSE], [0.9, 0.1], k=60) == pytest.approx(weighted_rrf([DENSE, SPARSE], [1.0, 1.0], k=60))


def test_weighted_minmax_by_hand():
    fused = weighted_minmax([DENSE, SPARSE], [0.6, 0.4])
    # dense: a 1, b 0.5, c 0; sparse: b 1, d 0
    assert fused == pytest.approx({"a": 0.6, "b": 0.6 * 0.5 + 0.4, "c": 0.0, "d": 0.0})
    assert max(fused, key=fused.__getitem__) == "b"


def test_weighted_minmax_equal_scores_and_empty_ranking():
    assert weighted_minmax([[("x", 2.0), ("y", 2.0)], []], [0.5, 0.5]) == {"x": 0.5, "y": 0.5}


def test_weighted_minmax_keeps_the_order_of_a_single_ranking():
    fused = weighted_minmax([DENSE], [1.0])
    assert sorted(fused, key=fused.__getitem__, reverse=True) == ["a", "b", "c"]


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_rejects_mismatched_weights(fusion):
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        FUSIONS[fusion]([DENSE, SPARSE], [1.0], 60)


def test_the_default_fusion_is_registered():
    assert RetrievalConfig().fusion in FUSIONS


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_retriever_with_each_fusion(folder, open_kb, fusion):
    (folder / "bees.md").write_text("# Bees\n\nHoney bees dance to tell the hive where the flowers are.\n")
    (folder / "tides.md").write_text("# Tides\n\nThe moon pulls the oceans and makes the tides rise and fall.\n")
    base = small_config()
    kb = open_kb(dataclasses.replace(base, retrieval=dataclasses.replace(base.retrieval, fusion=fusion)))
    kb.sync()
    hits = kb.retriever.search("why do the tides rise", k=2)
    assert hits[0].doc_id == "tides.md"
    assert hits[0].dense_score is not None and hits[0].bm25_score is not None
    assert hits[0].score >= hits[-1].score


def test_with_missed_adds_what_an_approximate_search_skipped_and_nothing_below_its_floor():
    ranking = [("a", 0.9), ("b", 0.5), ("c", 0.3)]
    exact = {"b": 0.5, "m": 0.7, "low": 0.29, "edge": 0.3}
    assert with_missed(ranking, exact) == [("a", 0.9), ("m", 0.7), ("b", 0.5), ("c", 0.3), ("edge", 0.3)]
    assert with_missed(ranking, {"low": 0.1}) == ranking  # an exact search comes back unchanged
    assert with_missed([], {"m": 0.7}) == []


def test_hybrid_recovers_a_chunk_the_dense_index_missed(folder, open_kb, monkeypatch):
    """HNSW is approximate: a BM25 candidate it skipped is scored exactly and fused with its true score."""
    (folder / "bees.md").write_text("# Bees\n\nHoney bees dance to tell the hive where the flowers are.\n")
    (folder / "tides.md").write_text("# Tides\n\nThe moon pulls the oceans and makes the tides rise and fall.\n")
    (folder / "moon.md").write_text("# Moon\n\nThe moon has no air and its craters are old.\n")
    kb = open_kb()
    kb.sync()
    query = "why do the tides rise and fall"
    honest = kb.retriever.search(query, k=3)
    tides = next(h.chunk.chunk_id for h in honest if h.doc_id == "tides.md")
    exact_search = kb.store.dense.search

    def missing_tides(vector, k, allowed=None):
        return [(c, s) for c, s in exact_search(vector, k, allowed) if c != tides]

    monkeypatch.setattr(kb.store.dense, "search", missing_tides)
    recovered = kb.retriever.search(query, k=3)
    assert [h.chunk.chunk_id for h in recovered] == [h.chunk.chunk_id for h in honest]
    assert [h.score for h in recovered] == pytest.approx([h.score for h in honest], abs=1e-5)
    assert recovered[0].doc_id == "tides.md" and recovered[0].dense_score == pytest.approx(honest[0].dense_score, abs=1e-5)


def test_convex_tmm_by_hand():
    # dense: floor -1, max 0.5 -> a (0.5+1)/1.5 = 1, b (0+1)/1.5; bm25: floor 0, max 8 -> b 1, d 2/8
    fused = convex_tmm([[("a", 0.5), ("b", 0.0)], [("b", 8.0), ("d", 2.0)]], [0.6, 0.4])
    assert fused == pytest.approx({"a": 0.6, "b": 0.6 / 1.5 + 0.4, "d": 0.4 * 0.25})


def test_complete_scores_fills_each_ranking_with_the_other_ones_candidates():
    dense, sparse = complete_scores([("a", 0.5), ("b", 0.4)], [("c", 9.0), ("a", 1.0)],
                                    dense_of={"c": 0.1, "a": 0.5}, bm25_of={"b": 0.0})
    assert dense == [("a", 0.5), ("b", 0.4), ("c", 0.1)]
    assert sparse == [("c", 9.0), ("a", 1.0), ("b", 0.0)]


def test_convex_tmm_keeps_a_decisive_bm25_winner_that_min_max_loses():
    """A unique word BM25 finds in one long chunk (score far above the rest) whose cosine stays low:
    min-max maps every list's top to 1, so the dense top wins; the theoretical floor keeps the lead."""
    dense = [(f"d{i}", 0.40 - 0.002 * i) for i in range(50)]  # (a flat dense list: nothing stands out)
    sparse = [("edit", 24.0), *[(f"d{i}", 3.0 - 0.05 * i) for i in range(0, 40)]]
    dense_all, sparse_all = complete_scores(dense, sparse, {"edit": 0.16, **dict(dense)}, dict(sparse))
    minmax = weighted_minmax([dense_all, sparse_all], [0.6, 0.4])
    assert max(minmax, key=minmax.__getitem__) == "d0"
    for w in (0.6, 0.7, 0.8):
        tmm = convex_tmm([dense_all, sparse_all], [w, 1 - w])
        assert max(tmm, key=tmm.__getitem__) == "edit"


def test_decisive_first_by_hand():
    from knowledge.fusion import decisive_first

    assert decisive_first([("a", 9.0), ("b", 3.0)], 2.0) == "a"
    assert decisive_first([("a", 5.0), ("b", 3.0)], 2.0) is None
    assert decisive_first([("a", 1.5)], 2.0) == "a"  # the only hit
    assert decisive_first([("a", 9.0), ("b", 3.0)], 0.0) is None  # off
    assert decisive_first([], 2.0) is None and decisive_first([("a", 0.0)], 2.0) is None


def test_keep_decisive_first_lifts_only_a_decisive_hit_and_keeps_the_rest_in_order():
    from knowledge.fusion import keep_decisive_first

    fused = {"x": 0.9, "y": 0.7, "rare": 0.4}
    assert keep_decisive_first(fused, [("rare", 12.0), ("y", 2.0)], 2.0) == {"x": 0.9, "y": 0.7, "rare": 0.9 + 1e-6}
    assert keep_decisive_first(fused, [("rare", 3.0), ("y", 2.0)], 2.0) == fused
    assert keep_decisive_first(fused, [("x", 12.0), ("y", 2.0)], 2.0) == fused


def _words(target: str, n: int, same: bool, dim: int = 64) -> list[str]:
    """Words the test embedder hashes into the same dimension as ``target`` (dense look-alikes), or into
    other ones (text that does not look like it)."""
    import hashlib

    bucket = lambda w: int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little") % dim  # noqa: E731
    return [w for w in (f"w{i}" for i in range(10_000)) if (bucket(w) == bucket(target)) is same][:n]


@pytest.mark.parametrize("ratio, in_top_3", [(0.0, False), (RetrievalConfig().decisive_ratio, True)])
def test_an_exact_rare_token_ranks_its_chunk_in_the_top_3(folder, open_kb, ratio, in_top_3):
    """The adversarial pass's `burstzq150x`: the only chunk holding the token is long (its cosine stays
    low) and short chunks that merely look alike to the dense retriever crowd the top. BM25 has one
    decisive hit; the min-max mix alone (ratio 0) ranks it below them, the decisive rule first."""
    token = "burstzq150x"
    filler = " ".join(_words(token, 1, same=False) * 26)  # a long chunk: a low cosine
    (folder / "config-notes.md").write_text(f"# Notes\n\n{filler} the limit is {token} for bursts .\n")
    for i, word in enumerate(_words(token, 6, same=True)):
        (folder / f"other{i}.md").write_text(f"# {word}\n\n{word} {word} {word} {word}\n")
    for i in range(20):
        (folder / f"noise{i}.md").write_text(f"# Noise {i}\n\nnothing to see here number{i} .\n")
    base = small_config()
    kb = open_kb(dataclasses.replace(base, retrieval=dataclasses.replace(base.retrieval, decisive_ratio=ratio)))
    kb.sync()
    top = [h.doc_id for h in kb.retriever.search(token, k=3)]
    assert ("config-notes.md" in top) is in_top_3, top
