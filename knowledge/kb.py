"""Opening a knowledge base: the store, its sources and its retriever, from config and a data dir."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import KnowledgeConfig
from .embedding import Embedder, SentenceTransformerEmbedder
from .progress import Progress
from .registry import SOURCES_GROUP, load_plugin
from .retrieval import HybridRetriever
from .sources.base import Change, Source, WritableSource
from .store import KnowledgeStore, Status
from .sync import Syncer
from .types import SyncReport


def read_status(config: KnowledgeConfig, data_dir: Path) -> Status:
    """The status of the knowledge base in ``data_dir`` from its files: no model, no Chroma client."""
    from .status import embedding_signature
    from .status import read_status as read

    return read(config, data_dir, embedding_signature(SentenceTransformerEmbedder(config.embedding).name))


def open_sources(config: KnowledgeConfig, data_dir: Path, folder: str | Path | None = None) -> list[Source]:
    """The sources ``sources.kinds`` names, each built from its own settings (kinds the config does not
    ask for, such as a web source without URLs, are left out)."""
    built = (load_plugin(SOURCES_GROUP, kind, "source").from_config(config.sources, Path(data_dir), folder)
             for kind in config.sources.kinds)
    return [s for s in built if s is not None]


@dataclass
class KnowledgeBase:
    """Everything of one data dir: the store, the retriever, and the sources that feed it."""

    config: KnowledgeConfig
    data_dir: Path
    store: KnowledgeStore
    retriever: HybridRetriever
    sources: list[Source]

    @classmethod
    def open(cls, config: KnowledgeConfig, data_dir: Path, folder: str | Path | None = None,
             embedder: Embedder | None = None, write: bool = True, progress: Progress | None = None) -> KnowledgeBase:
        """Open (creating if needed) the knowledge base in ``data_dir`` and reconcile its indexes.

        ``folder`` (a location given on the command line) overrides ``[sources.folder] path`` and the
        folder ingested last; ``write=False`` opens it for reading beside another process that writes
        (nothing on disk changes).
        """
        store = KnowledgeStore(config, Path(data_dir), embedder or SentenceTransformerEmbedder(config.embedding), write)
        try:
            sources = open_sources(config, Path(data_dir), folder)
            if write:
                for source in sources:
                    for key, value in source.remember().items():
                        store.manifest.set_meta(key, value)
                    if isinstance(source, WritableSource):
                        source.discard_partial_writes()  # left by a crash in the middle of an upload
            store.reconcile(progress, write=write)
        except BaseException:
            store.close()
            raise
        return cls(config, Path(data_dir), store, HybridRetriever(store, config.retrieval), sources)

    def source(self, kind: str) -> Source | None:
        return next((s for s in self.sources if s.kind == kind), None)

    def writable_sources(self) -> list[WritableSource]:
        """The sources uploads and deletes go to, in the order of ``sources.kinds``."""
        return [s for s in self.sources if isinstance(s, WritableSource)]

    def describe(self) -> str:
        """What the knowledge base reads, for one line of a message."""
        return ", ".join(s.describe() for s in self.sources) or "no source"

    def status(self) -> Status:
        """The store's status, with a warning for each source that cannot be read now."""
        warnings = tuple(w for s in self.sources if (w := s.unavailable()))
        return dataclasses.replace(self.store.status(), warnings=warnings)

    def sync(self, progress: Progress | None = None) -> list[SyncReport]:
        """Sync every source once (add, update, delete to match them)."""
        return [Syncer(self.store, s).sync(None, progress) for s in self.sources]

    def close(self) -> None:
        self.store.close()

    def watch(self, stop: threading.Event, on_report: Callable[[SyncReport], None] | None = None) -> list[threading.Thread]:
        """Start one thread per source that syncs its changes until ``stop`` is set."""
        threads = []
        for source in self.sources:
            syncer = Syncer(self.store, source)

            def on_change(change: Change, syncer: Syncer = syncer) -> None:
                report = syncer.sync(change)
                if on_report:
                    on_report(report)

            thread = threading.Thread(target=source.watch, args=(on_change, stop),  # each on its own timing
                                      name=f"watch-{source.kind}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads
