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
from .sources.base import Change, Source
from .store import KnowledgeStore, Status
from .sync import Syncer
from .types import SyncReport

FOLDER_META = "folder_root"


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

        ``folder`` overrides ``sources.folder`` and the folder ingested last; ``write=False`` opens it
        for reading beside another process that writes (nothing on disk changes).
        """
        store = KnowledgeStore(config, Path(data_dir), embedder or SentenceTransformerEmbedder(config.embedding), write)
        root = folder or config.sources.folder or store.manifest.get_meta(FOLDER_META) or None
        if write and root:
            store.manifest.set_meta(FOLDER_META, str(Path(root).expanduser().resolve()))
        store.reconcile(progress, write=write)
        sources = [s for kind in config.sources.kinds
                   if (s := load_plugin(SOURCES_GROUP, kind, "source").from_config(config.sources, Path(data_dir), root))]
        return cls(config, Path(data_dir), store, HybridRetriever(store, config.retrieval), sources)

    def source(self, kind: str) -> Source | None:
        return next((s for s in self.sources if s.kind == kind), None)

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

            interval = (self.config.watcher.debounce_seconds if source.kind == "folder"
                        else self.config.sources.web_refresh_seconds)
            thread = threading.Thread(target=source.watch, args=(on_change, stop, interval),
                                      name=f"watch-{source.kind}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads
