"""Test doubles for the parts that are not under test (never for the product itself)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from knowledge.embedding import Embedder


class HashingEmbedder(Embedder):
    """A deterministic bag-of-words embedder for tests: no model, the top-k is known in advance."""

    def __init__(self, dim: int = 64) -> None:
        self.name = f"hashing-{dim}"
        self.dim = dim

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (B, D)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                word = word.strip(".,;:!?\"'()[]")
                if word:
                    h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                    out[row, h % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)  # (B, 1)
        out[:, 0] += (norms[:, 0] == 0)  # empty text: a fixed unit vector
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        import re

        return [m.span() for m in re.finditer(r"\S+", text)]
