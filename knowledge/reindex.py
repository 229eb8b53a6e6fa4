"""Wiping the derived indexes so they can be rebuilt from the sources (``footnotes reindex``)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from .config import KnowledgeConfig
from .dense import DenseIndex
from .derived import wipe_derived
from .manifest import Manifest
from .sources.folder import recorded_folder
from .status import BM25_FILE, MANIFEST_FILE

__all__ = ["recorded_folder", "wipe_indexes"]


def wipe_indexes(data_dir: Path, config: KnowledgeConfig, keep_meta: Mapping[str, str] | None = None) -> str | None:
    """Delete the manifest, the BM25 index, the Chroma collection and every registered kind of data
    derived from them (``footnotes.derived``: the kNN-LM datastore); returns the folder ingested last.

    ``keep_meta`` (what the sources remember, ``Source.remember``) is written into the new, empty
    manifest, so the sources are found again without being named."""
    data_dir = Path(data_dir)
    folder = recorded_folder(data_dir)
    for name in (MANIFEST_FILE, f"{MANIFEST_FILE}-wal", f"{MANIFEST_FILE}-shm", BM25_FILE):
        (data_dir / name).unlink(missing_ok=True)
    wipe_derived(data_dir)
    if config.index.chroma == "embedded":
        shutil.rmtree(data_dir / "chroma", ignore_errors=True)
    elif data_dir.exists():
        DenseIndex(config.index, data_dir).reset()
    if keep_meta:
        manifest = Manifest(data_dir / MANIFEST_FILE)
        try:
            for key, value in keep_meta.items():
                manifest.set_meta(key, value)
        finally:
            manifest.close()
    return folder
