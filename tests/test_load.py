"""Load: 50 concurrent HTTP API chats and a continuous stream of searches while ~3,000 chunks are
ingested through the watcher, on the real app served by uvicorn (fake embedder, tiny LM; the same
run on the packaged models is bench/load.py). No request fails, no answer comes from another
question's document, every ingested file ends up indexed, and memory stays bounded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import numpy as np

from assistant.config import AnswerConfig
from tests.fakes import HashingEmbedder
from tests.load_driver import fact_documents, run_load
from tests.ui_fixtures import make_service

pytestmark = pytest.mark.slow  # a load run: `make test`, not `make check`

WORDS = [f"{a}{b}" for a in "river mill stone oak cart market road bridge field barn".split()
         for b in "side wright ward ley ton by ford ham stead wick".split()]


LINK = "where is the festival held"  # shared with the questions: the vectors stay one connected region


def filler(files: int, words_per_file: int, avoid: list[str], seed: int = 0) -> dict[str, str]:
    """Paragraphs of common words whose fake-embedder buckets no word of ``avoid`` (the questions)
    uses: the ingest grows the index without competing with the facts, so every question's top
    chunk is known whatever the ingest has reached. Each paragraph ends with the questions' common
    words: with no word in common, the facts' vectors are orthogonal to all 3,000 new ones and
    Chroma's HNSW search (default ef) often misses them entirely."""
    embed = HashingEmbedder().embed_batch
    taken = {int(np.argmax(v)) for v in embed([w for q in avoid for w in q.split()])}
    words = [w for w, v in zip(WORDS, embed(WORDS)) if int(np.argmax(v)) not in taken]
    assert len(words) >= 20, "too few filler words left"
    rng = random.Random(seed)
    out = {}
    for f in range(files):
        paragraphs = [" ".join(rng.choice(words) for _ in range(words_per_file // 4)) + " " + LINK for _ in range(4)]
        out[f"bulk/notes-{f:03d}.txt"] = "\n\n".join(paragraphs) + "\n"
    return out


def test_concurrent_chats_and_searches_during_a_large_ingest(tmp_path: Path) -> None:
    facts = fact_documents(25)
    (tmp_path / "knowledge" / "bulk").mkdir(parents=True)
    service = make_service(tmp_path, {name: text for name, (_, text) in facts.items()},
                           answer=AnswerConfig(k=2, max_new_tokens=4))
    try:
        result = run_load(service, facts, filler(250, 400, [q for q, _ in facts.values()]), chats=50, search_threads=2, ingest_timeout=90,
                          chat_timeout=90)
    finally:
        service.kb.close()
    print(f"\nchats: {result.chats.summary()} in {result.chat_seconds:.1f} s; searches: {result.searches.summary()}; "
          f"ingest: {result.ingest_files} files, {result.ingest_chunks} chunks in {result.ingest_seconds:.1f} s; "
          f"RSS {result.rss_start_mb:.0f} -> peak {result.rss_peak_mb:.0f} MB")
    assert result.chats.failures == [] and len(result.chats.latencies) == 50
    assert result.searches.failures == [] and len(result.searches.latencies) >= 20
    assert result.mixed == [] and result.search_misses == []
    assert result.ingest_chunks >= 2500  # "a few thousand chunks", all indexed
    assert result.rss_peak_mb - result.rss_start_mb < 500
