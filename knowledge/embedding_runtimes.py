"""The embedding model on ONNX Runtime or OpenVINO instead of torch (``embedding.backend``).

Both start from the plain-torch BERT of ``knowledge/bert_encoder.py`` (same weights, same tokenizer,
same mean pooling), converted once into the cache of ``knowledge/model_cache.py``; later loads read the
converted file and need neither torch nor the export step.

- ONNX: ``torch.onnx.export`` of the encoder; ``int8`` is ONNX Runtime's dynamic quantization of the
  weights (``quantize_dynamic``, per-channel int8 weights, activations quantized per batch): what
  sentence-transformers' ``export_dynamic_quantized_onnx_model`` asks Optimum to do.
- OpenVINO: ``openvino.convert_model`` of the encoder. ``float32`` and ``bfloat16`` share one fp32 IR
  and differ in the inference precision the CPU plugin computes in (bf16 on CPUs with AMX or
  avx512_bf16; elsewhere OpenVINO computes in fp32). ``int8`` is NNCF's post-training static
  quantization (what ``export_static_quantized_openvino_model`` runs through optimum-intel), calibrated
  on standard-library docstrings so nothing is downloaded.

sentence-transformers' own ``backend="onnx"`` / ``"openvino"`` go through Optimum, whose releases pin
transformers < 4.58 (optimum-onnx) or another torch (optimum-intel): they cannot be installed beside this
project's torch 2.13 and transformers 5, so the runtimes are called directly.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import bert_encoder
from .bert_encoder import BertTokenizer, mean_pool_numpy

ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"
_INPUTS = ("input_ids", "attention_mask")


class RuntimeEncoder:
    """``encode``, ``encode_ids`` and ``token_spans`` like ``BertEncoder``, over a runtime's ``_hidden(ids, mask)``."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = BertTokenizer(folder)
        self.dim = bert_encoder.hidden_size(folder)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids, mask = self.tokenizer.batch(texts)  # (B, T) each
        return mean_pool_numpy(self._hidden(ids, mask), mask)  # (B, H)

    def encode_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """``encode`` of texts given as their token ids (``BertTokenizer.tokens(text).ids``)."""
        if not token_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids, mask = self.tokenizer.batch_ids(token_ids)  # (B, T) each
        return mean_pool_numpy(self._hidden(ids, mask), mask)  # (B, H)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.tokens(text)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.token_ids(text)

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask (B, T) int64 -> last hidden state (B, T, H), valid until this thread's next call."""
        raise NotImplementedError


class OnnxEncoder(RuntimeEncoder):
    def __init__(self, folder: Path, model_file: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        super().__init__(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]  # (B, T, H); thread-safe


class OpenVinoEncoder(RuntimeEncoder):
    """OpenVINO's CPU plugin runs the requests of one compiled model on its streams (one by default:
    the latency hint, all cores), so a search's one-text request would wait behind an ingest batch
    in progress. Small requests (a query) therefore get a compiled model of their own, one thread,
    never queued behind a bulk batch; each is compiled on first use."""

    SMALL_REQUEST = 4  # texts per request up to which the small model answers

    def __init__(self, folder: Path, model_file: Path, precision: str, threads: int = 0) -> None:
        import openvino as ov

        super().__init__(folder)
        self._core = ov.Core()
        bf16 = precision == "bfloat16" and "BF16" in self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self._config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._model_file = model_file
        self._compiled: dict[str, object] = {}
        self._compile_lock = threading.Lock()
        self._local = threading.local()  # one infer request per thread and model: a request is not thread-safe

    def _compiled_model(self, kind: str):
        with self._compile_lock:
            if kind not in self._compiled:
                config = dict(self._config, **({"INFERENCE_NUM_THREADS": 1} if kind == "small" else {}))
                self._compiled[kind] = self._core.compile_model(self._core.read_model(str(self._model_file)), "CPU",
                                                                config)
            return self._compiled[kind]

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        kind = "small" if ids.shape[0] <= self.SMALL_REQUEST else "bulk"
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if kind not in requests:
            requests[kind] = self._compiled_model(kind).create_infer_request()
        requests[kind].infer({0: ids, 1: mask})
        return requests[kind].get_output_tensor(0).data  # (B, T, H): the request's buffer, pooled before its next infer


# -- exporters: each writes one converted model into an empty folder -------------------------------
def _example(folder: Path):
    torch = bert_encoder._torch()  # noqa: SLF001 - the one lazy torch import of the encoder
    ids, mask = BertTokenizer(folder).batch(["a short text", "a slightly longer text for the export"])  # (2, T)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def export_onnx(folder: Path, out: Path) -> None:
    """fp32 ONNX of the encoder (inputs input_ids, attention_mask; output last_hidden_state), dynamic B and T."""
    torch = bert_encoder._torch()  # noqa: SLF001
    model = bert_encoder.load_torch_model(folder)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, _example(folder), str(out / ONNX_FILE), input_names=list(_INPUTS),
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)


def export_onnx_int8(folder: Path, out: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization of ``export_onnx``'s model (per-channel int8 weights)."""
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        export_onnx(folder, Path(tmp))
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "consider pre-processing" is logged on the root logger
        try:
            quantize_dynamic(str(Path(tmp) / ONNX_FILE), str(out / ONNX_FILE), weight_type=QuantType.QInt8,
                             per_channel=True)
        finally:
            quiet.setLevel(level)


def _openvino_model(folder: Path):
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ov.convert_model(bert_encoder.load_torch_model(folder), example_input=_example(folder))


def export_openvino(folder: Path, out: Path) -> None:
    """fp32 OpenVINO IR of the encoder (the precision it runs in is chosen when it is compiled)."""
    import openvino as ov

    ov.save_model(_openvino_model(folder), str(out / OPENVINO_FILE), compress_to_fp16=False)


def export_openvino_int8(folder: Path, out: Path) -> None:
    """NNCF post-training static int8 quantization of the IR, calibrated on ``calibration_texts``."""
    import nncf
    import openvino as ov

    tokenizer = BertTokenizer(folder)
    texts = calibration_texts()
    batches = [dict(zip((0, 1), tokenizer.batch(texts[i : i + 8]))) for i in range(0, len(texts), 8)]  # (8, T) each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nncf.set_log_level(40)  # errors only: no progress bars on the terminal
        quantized = nncf.quantize(_openvino_model(folder), nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(batches))
    ov.save_model(quantized, str(out / OPENVINO_FILE), compress_to_fp16=False)


_CALIBRATION_MODULES = ("json", "pathlib", "re", "collections", "argparse", "logging", "sqlite3", "subprocess",
                        "threading", "datetime", "decimal", "statistics", "textwrap", "typing", "zipfile", "csv",
                        "shutil", "functools", "itertools", "random", "email.message", "http.client", "unittest")


def calibration_texts(n: int = 64, words: int = 120) -> list[str]:
    """``n`` passages of about ``words`` words from standard-library docstrings: prose with code in it, like
    documentation chunks, and installed with every Python (calibration must not download a data set)."""
    paragraphs: list[str] = []
    for name in _CALIBRATION_MODULES:
        module = importlib.import_module(name)
        members = [module] + [getattr(module, a) for a in sorted(vars(module)) if not a.startswith("_")]
        for obj in members:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            paragraphs += [" ".join(p.split()) for p in (doc or "").split("\n\n") if len(p.split()) >= 8]
    passages, current = [], []
    for paragraph in dict.fromkeys(paragraphs):  # in order, each once
        current.append(paragraph)
        if sum(len(p.split()) for p in current) >= words:
            passages.append(" ".join(current))
            current = []
        if len(passages) == n:
            break
    return passages
