"""Shared fixtures. Tests never touch the network: the hub is offline for every test."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import dataclasses  # noqa: E402
import urllib.parse  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from knowledge.config import ChunkingConfig, IndexConfig, KnowledgeConfig  # noqa: E402
from knowledge.kb import KnowledgeBase  # noqa: E402
from tests.fakes import HashingEmbedder  # noqa: E402


# `make test` runs the knowledge tests a second time with this set to a real `chroma run` server's URL
# (scripts/chroma_server.py): every store the fixtures open then keeps its vectors on that server.
CHROMA_SERVER = os.environ.get("FOOTNOTES_TEST_CHROMA", "")
embedded_only = pytest.mark.skipif(bool(CHROMA_SERVER), reason="about the embedded Chroma store on disk")


def tests_index_config() -> IndexConfig:
    """The dense index of the test fixtures: embedded, or the server $FOOTNOTES_TEST_CHROMA names."""
    if not CHROMA_SERVER:
        return IndexConfig()
    url = urllib.parse.urlsplit(CHROMA_SERVER)
    return IndexConfig(chroma="http", chroma_host=url.hostname or "127.0.0.1", chroma_port=url.port or 8000)


def small_config(max_file_bytes: int | None = None, **folder) -> KnowledgeConfig:
    """Knowledge settings for unit tests: small chunks, no web source; ``folder``: [sources.folder] settings."""
    from knowledge.sources.folder import FolderSettings

    base = KnowledgeConfig()
    sources = dataclasses.replace(base.sources, kinds=("folder",),
                                  tables=(("folder", FolderSettings(**folder)),) if folder else ())
    if max_file_bytes is not None:
        sources = dataclasses.replace(sources, max_file_bytes=max_file_bytes)
    return dataclasses.replace(
        base,
        chunking=ChunkingConfig(size_tokens=40, overlap_tokens=5),
        index=tests_index_config(),
        sources=sources,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "knowledge"
    root.mkdir()
    return root


@pytest.fixture
def open_kb(tmp_path: Path, folder: Path):
    """Open a knowledge base over ``folder`` with the deterministic fake embedder."""
    opened: list[KnowledgeBase] = []

    def _open(config: KnowledgeConfig | None = None, data_dir: Path | None = None) -> KnowledgeBase:
        kb = KnowledgeBase.open(config or small_config(), data_dir or tmp_path / "data", folder=folder,
                                embedder=HashingEmbedder())
        opened.append(kb)
        return kb

    yield _open
    for kb in opened:
        kb.close()


def assert_consistent(kb: KnowledgeBase) -> None:
    """The three indexes hold exactly the same chunk ids, and every chunk's text is its document's slice."""
    store = kb.store
    truth = store.manifest.all_chunk_ids()
    assert store.dense.ids() == truth
    assert store.bm25.ids() == truth
    assert store.manifest.chunk_count() == len(truth)
