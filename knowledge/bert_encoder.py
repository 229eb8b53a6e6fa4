"""A sentence-transformers BERT model (Transformer + mean Pooling [+ Normalize]) in plain torch.

Why it exists: on 2 shared cores, importing sentence-transformers costs about 2.9 s and transformers'
model classes about 1.8 s on top of torch's own 1.0 s, while loading MiniLM's weights takes 0.1 s
(measured: docs/benchmarks.md, "CLI start-up"). This module needs only torch, safetensors and
tokenizers, reads the same files (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``sentence_bert_config.json``, ``1_Pooling/config.json``) and computes what sentence-transformers
computes: BertModel's last hidden state (Devlin et al. 2019), averaged over the real tokens, then
L2-normalised. ``tests/test_embedding_loaders.py`` checks the vectors against sentence-transformers
(cosine >= 0.9999) and the token spans for equality on the packaged model.

A folder of any other shape (another architecture, CLS or max pooling, extra Dense modules) is not
``supported`` and loads through sentence-transformers (``knowledge/embedding.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"]
_NORMALIZE = "sentence_transformers.models.Normalize"


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def supported(folder: Path) -> bool:
    """True when ``folder`` is a sentence-transformers BERT model with mean pooling this module computes."""
    folder = Path(folder)
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return False
    types = [m.get("type") for m in modules]
    if types not in (_MODULES, [*_MODULES, _NORMALIZE]) or modules[0].get("path", "") != "":
        return False
    config = _read_json(folder / "config.json") or {}
    pooling = _read_json(folder / modules[1].get("path", "1_Pooling") / "config.json") or {}
    st_config = _read_json(folder / "sentence_bert_config.json") or {}
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and modes == {"pooling_mode_mean_tokens"}
        and not st_config.get("do_lower_case", False)
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )


def _torch():
    import torch

    return torch


def _rename(key: str) -> str | None:
    """A BertModel weight name -> this module's name (None: not used, e.g. the pooler)."""
    key = key.removeprefix("bert.")
    if key.startswith("pooler.") or key == "embeddings.position_ids":
        return None
    for pattern, repl in _RENAMES:
        key, n = re.subn(pattern, repl, key)
        if n:
            return key
    return key


_RENAMES = [
    (r"^embeddings\.word_embeddings\.", "word."),
    (r"^embeddings\.position_embeddings\.", "position."),
    (r"^embeddings\.token_type_embeddings\.", "token_type."),
    (r"^embeddings\.LayerNorm\.", "norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn_out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn_in."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn_out."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
]


def _build_modules():
    """The torch modules, defined on first use so that importing this file never imports torch."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Layer(nn.Module):
        """One post-norm Transformer encoder layer of BERT."""

        def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
            super().__init__()
            self.heads = heads
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=eps)
            self.ffn_in = nn.Linear(hidden, inner)
            self.ffn_out = nn.Linear(inner, hidden)
            self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, key_mask):
            """x (B, T, H), key_mask (B, 1, 1, T) bool (True = a real token) -> (B, T, H)."""
            B, T, H = x.shape
            split = lambda t: t.view(B, T, self.heads, H // self.heads).transpose(1, 2)  # noqa: E731 - (B, h, T, H/h)
            att = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                                 attn_mask=key_mask)  # (B, h, T, H/h)
            att = att.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
            x = self.attn_norm(self.attn_out(att) + x)  # (B, T, H)
            return self.ffn_norm(self.ffn_out(F.gelu(self.ffn_in(x))) + x)  # (B, T, H)

    class Bert(nn.Module):
        """BertModel's encoder without the pooler: token ids -> last hidden state."""

        def __init__(self, config: dict) -> None:
            super().__init__()
            hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
            self.word = nn.Embedding(config["vocab_size"], hidden)
            self.position = nn.Embedding(config["max_position_embeddings"], hidden)
            self.token_type = nn.Embedding(config.get("type_vocab_size", 2), hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(
                Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
                for _ in range(config["num_hidden_layers"])
            )

        def forward(self, ids, mask):
            """ids, mask (B, T) -> (B, T, H)."""
            T = ids.shape[1]
            x = self.word(ids) + self.token_type.weight[0]  # (B, T, H): every token is of sentence A
            x = self.norm(x + self.position.weight[:T])  # (B, T, H)
            key_mask = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
            for layer in self.layers:
                x = layer(x, key_mask)  # (B, T, H)
            return x

    return Bert


def mean_pool(hidden, mask):
    """Sentence-transformers' mean pooling, then L2 normalisation: hidden (B, T, H), mask (B, T) -> (B, H)."""
    torch = _torch()
    acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype  # as sentence-transformers
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1, dtype=acc)  # (B, H)
    pooled = (summed / torch.clamp(weights.sum(dim=1, dtype=acc), min=1e-9)).to(hidden.dtype)  # (B, H)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)  # (B, H)


def mean_pool_numpy(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mean_pool`` for the other runtimes' outputs: hidden (B, T, H) float, mask (B, T) -> (B, H) float32."""
    weights = mask.astype(np.float32)  # (B, T)
    summed = np.einsum("bt,bth->bh", weights, hidden.astype(np.float32, copy=False))  # (B, H); 8x (hidden * w).sum(1)
    pooled = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)  # (B, H)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)  # (B, H)


class BertTokenizer:
    """The model's ``tokenizer.json``: padded, truncated id batches, and token spans of whole texts."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        st_config = _read_json(folder / "sentence_bert_config.json") or {}
        max_length = int(st_config.get("max_seq_length") or config["max_position_embeddings"])
        self._tokenizer_file = folder / "tokenizer.json"
        self._spans_tokenizer = None  # whole texts, no special tokens: made when chunking first asks
        self._batch = Tokenizer.from_file(str(self._tokenizer_file))
        self._batch.enable_truncation(max_length, strategy="longest_first")
        self._pad_id = int(config.get("pad_token_id") or 0)
        self._batch.enable_padding(pad_id=self._pad_id, pad_token=self._batch.id_to_token(self._pad_id) or "[PAD]")
        self._max_length = max_length
        # The special tokens the post-processor puts around a text ([CLS] ... [SEP] for BERT), for batch_ids
        bare = self._batch.encode("a", add_special_tokens=False).ids
        full = self._batch.encode("a").ids
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self._prefix, self._suffix = full[:at], full[at + len(bare) :]
        # A text cut out of a longer one at whitespace tokenizes to the longer one's tokens there only if words are
        # split at whitespace and punctuation and normalised one character at a time: BERT's pre-tokenizer and
        # normaliser. With any other, ``tokens`` gives no ids, and chunks are tokenized again to be embedded.
        self._ids_reusable = (type(self._batch.pre_tokenizer).__name__ == "BertPreTokenizer"
                              and type(self._batch.normalizer).__name__ in ("BertNormalizer", "NoneType"))

    def batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask), each (len(texts), T) int64, padded to the longest text of the batch."""
        enc = self._batch.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)  # (B, T)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)  # (B, T)
        return ids, mask

    def batch_ids(self, token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``batch`` of texts already tokenized (ids without special tokens, e.g. kept by the chunker): the
        special tokens added, truncated and padded as ``batch`` does, so equal ids give equal arrays."""
        keep = self._max_length - len(self._prefix) - len(self._suffix)
        rows = [[*self._prefix, *ids[:keep], *self._suffix] for ids in token_ids]
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def tokens(self, text: str) -> Tokens:
        """The spans of ``text``'s tokens (no special tokens, no truncation), with their ids (None when this
        tokenizer's ids of a text cut at whitespace may differ from the ids of the same text in context)."""
        if self._spans_tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self._tokenizer_file))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._spans_tokenizer = tokenizer
        enc = self._spans_tokenizer.encode(text, add_special_tokens=False)
        return Tokens(enc.offsets, enc.ids if self._ids_reusable else None)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.tokens(text)

    def token_ids(self, text: str) -> list[int]:
        """The ids of ``text``'s tokens, no special tokens, no truncation."""
        self.tokens("")  # makes the untruncated tokenizer
        return self._spans_tokenizer.encode(text, add_special_tokens=False).ids


class Tokens(list):
    """A text's token spans (a list of (start, end)), and ``ids``: the model's id of each token, for the
    embedder to reuse (``knowledge/chunking.py`` keeps the ids of each chunk's tokens)."""

    def __init__(self, spans, ids: Sequence[int] | None) -> None:
        super().__init__(spans)
        self.ids = ids


def load_torch_model(folder: Path):
    """The fp32 torch module of a ``supported`` folder, in eval mode: forward(ids, mask) (B, T) -> (B, T, H)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    with _torch().device("meta"):  # no random init of weights that are replaced at once
        model = _build_modules()(config)
    weights = {new: t for key, t in load_file(str(folder / "model.safetensors")).items()
               if (new := _rename(key)) is not None}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def hidden_size(folder: Path) -> int:
    return int(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))["hidden_size"])


class BertEncoder:
    """Loads a ``supported`` folder into torch; ``encode`` gives unit vectors, ``token_spans`` the tokenizer's offsets."""

    def __init__(self, folder: Path) -> None:
        self.model = load_torch_model(folder)
        self.dim = hidden_size(folder)
        self.tokenizer = BertTokenizer(folder)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(*self.tokenizer.batch(texts))

    def encode_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """``encode`` of texts given as their token ids (``BertTokenizer.tokens(text).ids``)."""
        if not token_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(*self.tokenizer.batch_ids(token_ids))

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = _torch()
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)  # (B, T) each
        with torch.inference_mode():
            vecs = mean_pool(self.model(ids, mask), mask)  # (B, H)
        return vecs.float().numpy()

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.tokens(text)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.token_ids(text)
