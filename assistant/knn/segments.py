"""Datastore segments on disk: the entries added by one update, never modified afterwards.

A segment folder ``seg-NNNNNN/`` holds, for its n entries (no pickle anywhere):

- ``keys.npy``       (n, D) float16, opened memory-mapped
- ``values.npy``     (n,) int32, the next token id
- ``positions.npy``  (n, 2) int32, the value token's index and its character offset in its chunk
- ``chunks.json``    the segment's chunks in row order: chunk id, source, text, first row, end row

It is written into a temp folder and renamed into place; the datastore's ``meta.json``, written
after it, is what makes it part of the datastore (a crash in between leaves an unreferenced folder
that the next writer deletes). An entry's id is ``segment_number << 32 | row``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowledge.atomic import write_atomic
from knowledge.errors import IndexUnusableError

ROW_BITS = 32


@dataclass(frozen=True)
class ChunkEntries:
    """The entries of one chunk: a key per position and the token that followed it."""

    chunk_id: str
    source: str
    text: str
    keys: np.ndarray  # (n, D) float
    values: np.ndarray  # (n,) token ids
    token_positions: np.ndarray  # (n,) index of the value token in the chunk's tokens
    char_positions: np.ndarray  # (n,) character offset of the value token in ``text``

    def __post_init__(self) -> None:
        n = len(self.values)
        if not (len(self.keys) == len(self.token_positions) == len(self.char_positions) == n):
            raise ValueError(f"chunk {self.chunk_id}: keys, values and positions differ in length")


@dataclass(frozen=True)
class SegmentChunk:
    chunk_id: str
    source: str
    text: str
    start: int  # first row
    end: int  # one past the last row


class Segment:
    """One segment opened read-only: keys memory-mapped, the small arrays in memory."""

    def __init__(self, root: Path, number: int) -> None:
        self.number = number
        self.path = root / segment_name(number)
        try:
            self.keys = np.load(self.path / "keys.npy", mmap_mode="r", allow_pickle=False)  # (n, D) fp16
            self.values = np.load(self.path / "values.npy", allow_pickle=False)  # (n,)
            self.positions = np.load(self.path / "positions.npy", allow_pickle=False)  # (n, 2)
            rows = json.loads((self.path / "chunks.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexUnusableError(
                f"the kNN-LM datastore segment {self.path} is unreadable ({exc}); delete the folder "
                f"{root} and it is rebuilt from the knowledge base"
            ) from None
        self.chunks = [SegmentChunk(*row) for row in rows]
        self.chunk_of_row = np.zeros(len(self.values), dtype=np.int32)  # (n,) ordinal into self.chunks
        for ordinal, c in enumerate(self.chunks):
            self.chunk_of_row[c.start : c.end] = ordinal

    def __len__(self) -> int:
        return len(self.values)

    def ids(self, rows: np.ndarray) -> np.ndarray:
        return (np.int64(self.number) << ROW_BITS) | rows.astype(np.int64)

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir())


def segment_name(number: int) -> str:
    return f"seg-{number:06d}"


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment numbers, rows) of entry ids."""
    ids = ids.astype(np.int64)
    return ids >> ROW_BITS, ids & ((1 << ROW_BITS) - 1)


def write_segment(root: Path, number: int, entries: list[ChunkEntries], dim: int) -> None:
    """Write the entries of these chunks as segment ``number`` (temp folder, then one rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{segment_name(number)}-", dir=root))
    try:
        keys = _stack([e.keys for e in entries], (0, dim), np.float16)
        values = _stack([e.values for e in entries], (0,), np.int32)
        positions = np.stack([_stack([e.token_positions for e in entries], (0,), np.int32),
                              _stack([e.char_positions for e in entries], (0,), np.int32)], axis=1)  # (n, 2)
        rows, start = [], 0
        for e in entries:
            rows.append([e.chunk_id, e.source, e.text, start, start + len(e.values)])
            start += len(e.values)
        for name, array in (("keys.npy", keys), ("values.npy", values), ("positions.npy", positions)):
            write_atomic(tmp / name, lambda fh, a=array: np.save(fh, a, allow_pickle=False))
        write_atomic(tmp / "chunks.json", json.dumps(rows, ensure_ascii=False).encode("utf-8"))
        os.replace(tmp, root / segment_name(number))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stack(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if not parts:
        return np.zeros(empty_shape, dtype=dtype)
    return np.ascontiguousarray(np.concatenate([np.asarray(p) for p in parts]).astype(dtype))
