"""embedding.dtype: each precision of the packaged model gives unit vectors close to fp32's."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge.config import EmbeddingConfig
from knowledge.embedding import PRECISIONS, SentenceTransformerEmbedder
from knowledge.errors import ConfigError

TEXTS = [
    "How do I read a file line by line in Python?",
    "The moon pulls the oceans and makes the tides rise and fall.",
    "Honey bees dance to tell the hive where the flowers are.",
]


def test_unknown_dtype_names_the_known_ones():
    with pytest.raises(ConfigError, match="use one of float32, bfloat16, int8"):
        SentenceTransformerEmbedder(EmbeddingConfig(dtype="float8"))


@pytest.fixture(scope="module")
def fp32_vectors():
    return SentenceTransformerEmbedder(EmbeddingConfig(dtype="float32")).embed(TEXTS)


@pytest.mark.real_models
@pytest.mark.parametrize("dtype", [d for d in PRECISIONS if d != "float32"])
def test_each_precision_stays_close_to_fp32(dtype, fp32_vectors):
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(dtype=dtype))
    vectors = embedder.embed(TEXTS)  # (3, 384)
    assert embedder.name.endswith(f"@{dtype}")
    assert vectors.dtype == np.float32 and vectors.shape == fp32_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
    cosines = np.sum(vectors * fp32_vectors, axis=1)  # (3,)
    assert cosines.min() > 0.95
    sims = vectors @ vectors.T  # (3, 3): the same nearest neighbours as fp32
    ref = fp32_vectors @ fp32_vectors.T
    assert (np.argsort(-sims, axis=1) == np.argsort(-ref, axis=1)).all()
