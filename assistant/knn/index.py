"""Nearest-neighbour search over the datastore keys, with faiss.

Why faiss: it is the library the kNN-LM paper used, it is maintained, CPU wheels install from PyPI
(``faiss-cpu``), and it has both exact and compressed indexes behind one interface that takes our
own int64 ids (``add_with_ids`` / ``remove_ids``), which is what incremental updates need.

- **Exact** (``IndexIDMap2(IndexFlatL2)``) up to ``knn.exact_max_entries``: the true k nearest
  keys by squared L2, as in the paper's small-datastore experiments. It holds a float32 copy of
  the keys in memory (4·D bytes an entry), is rebuilt from the memory-mapped fp16 keys when the
  datastore opens (a fraction of a second per 100k entries), and batched queries (evaluation) run
  as one matrix product. A single query is a scan of every key, bound by memory bandwidth: that
  cost grows linearly, hence the threshold.
- **IVF-PQ** (``IndexIVFPQ``) above it, as the paper did for its 100M+ entry stores: keys are
  clustered into ``nlist`` inverted lists and compressed to ``pq_subquantizers`` bytes each; a query
  visits ``nprobe`` lists. Its distances are approximate, so by default the k candidates are
  re-ranked with exact distances recomputed from the fp16 keys (the paper's "full precision"
  option). The trained index is saved with faiss's own format (no pickle), atomically.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

EXACT = "exact"
IVFPQ = "ivfpq"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("the kNN-LM datastore needs faiss: pip install faiss-cpu") from None
    return faiss


def new_exact(dim: int) -> Any:
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatL2(dim))


def pq_subquantizers(dim: int, wanted: int) -> int:
    """The largest m <= wanted that divides dim (faiss PQ splits a key into m equal sub-vectors)."""
    return max(m for m in range(1, max(1, min(wanted, dim)) + 1) if dim % m == 0)


def nlist_for(entries: int) -> int:
    """Inverted lists for an IVF index: about 4·√N (faiss's guideline), between 16 and 65536."""
    return int(min(65536, max(16, 4 * math.sqrt(entries))))


def train_ivfpq(sample: np.ndarray, entries: int, subquantizers: int) -> Any:
    """An empty trained IVF-PQ index.  sample: (S, D) float32 keys, ideally >= 39·nlist of them."""
    faiss = _faiss()
    dim = sample.shape[1]
    nlist = min(nlist_for(entries), max(1, sample.shape[0] // 39))
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(dim, subquantizers), 8)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def kind_of(index: Any) -> str:
    return IVFPQ if "IVF" in type(index).__name__ else EXACT


def search(index: Any, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids), both (B, k); missing neighbours have id -1.  queries: (B, D) float32."""
    if kind_of(index) == IVFPQ:
        index.nprobe = nprobe
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def remove(index: Any, ids: np.ndarray) -> None:
    if len(ids):
        index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))


def add(index: Any, keys: np.ndarray, ids: np.ndarray) -> None:
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(keys, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def save(index: Any, path: Path) -> None:
    """Write with faiss's own format into a temp file, fsync, then rename over ``path``."""
    faiss = _faiss()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Any:
    return _faiss().read_index(str(path))


def memory_bytes(index: Any) -> int:
    """An estimate of the index's resident size: stored vectors or codes, ids and centroids."""
    if kind_of(index) == IVFPQ:
        code = index.pq.code_size
        return int(index.ntotal * (code + 8) + index.nlist * index.d * 4 + index.pq.M * 256 * (index.d // index.pq.M) * 4)
    return int(index.ntotal * (index.d * 4 + 8 + 8))  # float32 keys, ids, and the id map's reverse map
