"""embedding.dtype on the torch backend: each precision of the packaged model gives unit vectors close to fp32's."""

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
        SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="float8"))


@pytest.fixture(scope="module")
def fp32_vectors():
    return SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="float32")).embed(TEXTS)


@pytest.mark.real_models
@pytest.mark.parametrize("dtype", [d for d in PRECISIONS if d != "float32"])
def test_each_precision_stays_close_to_fp32(dtype, fp32_vectors):
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype=dtype))
    vectors = embedder.embed(TEXTS)  # (3, 384)
    assert embedder.name.endswith(f"@{dtype}")
    assert vectors.dtype == np.float32 and vectors.shape == fp32_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
    cosines = np.sum(vectors * fp32_vectors, axis=1)  # (3,)
    assert cosines.min() > 0.95
    sims = vectors @ vectors.T  # (3, 3): the same nearest neighbours as fp32
    ref = fp32_vectors @ fp32_vectors.T
    assert (np.argsort(-sims, axis=1) == np.argsort(-ref, axis=1)).all()


def test_int8_builds_exactly_what_quantize_dynamic_builds():
    import copy

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                                torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.LayerNorm(8)))
    reference = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                 dtype=torch.qint8)
    ours = PRECISIONS["int8"](model)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    pairs = [(a, b) for a, b in zip(reference.modules(), ours.modules()) if isinstance(a, DynamicLinear)]
    assert len(pairs) == 2 and all(type(b) is DynamicLinear for _, b in pairs)
    for a, b in pairs:
        (wa, ba), (wb, bb) = a._weight_bias(), b._weight_bias()  # noqa: SLF001
        assert torch.equal(wa.int_repr(), wb.int_repr()) and torch.equal(ba, bb)
        assert torch.equal(wa.q_per_channel_scales(), wb.q_per_channel_scales())
        assert torch.equal(wa.q_per_channel_zero_points(), wb.q_per_channel_zero_points())
    x = torch.randn(3, 5, 16)  # (B, T, in)
    assert torch.equal(reference(x), ours(x))
