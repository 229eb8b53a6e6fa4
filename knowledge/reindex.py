"""Wiping the derived indexes so they can be rebuilt from the sources (``footnotes reindex``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import KnowledgeConfig
from .dense import DenseIndex
from .errors import IndexError_
from .manifest import Manifest


def wipe_indexes(data_dir: Path, config: KnowledgeConfig) -> str | None:
    """Delete the manifest, the BM25 index and the Chroma collection; returns the folder ingested last."""
    data_dir = Path(data_dir)
    folder = None
    manifest_path = data_dir / "manifest.sqlite3"
    if manifest_path.exists():
        try:
            manifest = Manifest(manifest_path)
            folder = manifest.get_meta("folder_root")
            manifest.close()
        except IndexError_:
            pass  # unreadable: it is deleted below anyway
    for name in ("manifest.sqlite3", "manifest.sqlite3-wal", "manifest.sqlite3-shm", "bm25.npz"):
        (data_dir / name).unlink(missing_ok=True)
    if config.index.chroma == "embedded":
        shutil.rmtree(data_dir / "chroma", ignore_errors=True)
    elif data_dir.exists():
        DenseIndex(config.index, data_dir).reset()
    return folder
