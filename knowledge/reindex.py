"""Wiping the derived indexes so they can be rebuilt from the sources (``footnotes reindex``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import KnowledgeConfig
from .dense import DenseIndex
from .errors import IndexError_
from .manifest import Manifest


def recorded_folder(data_dir: Path) -> str | None:
    """The folder ingested last into ``data_dir``, if its manifest is readable."""
    manifest_path = Path(data_dir) / "manifest.sqlite3"
    if not manifest_path.exists():
        return None
    try:
        manifest = Manifest(manifest_path)
        try:
            return manifest.get_meta("folder_root")
        finally:
            manifest.close()
    except IndexError_:
        return None  # unreadable: the folder has to be named


def wipe_indexes(data_dir: Path, config: KnowledgeConfig) -> str | None:
    """Delete the manifest, the BM25 index, the Chroma collection and the kNN-LM datastore; returns the
    folder ingested last."""
    data_dir = Path(data_dir)
    folder = recorded_folder(data_dir)
    for name in ("manifest.sqlite3", "manifest.sqlite3-wal", "manifest.sqlite3-shm", "bm25.npz"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "knn", ignore_errors=True)
    if config.index.chroma == "embedded":
        shutil.rmtree(data_dir / "chroma", ignore_errors=True)
    elif data_dir.exists():
        DenseIndex(config.index, data_dir).reset()
    return folder
