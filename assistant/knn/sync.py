"""Keeping the datastore in step with the knowledge store, in the foreground or in the background.

The manifest is the truth: :func:`sync_datastore` adds the entries of the chunk ids the datastore
lacks and tombstones those of chunk ids the manifest no longer has. Chunk ids are content-derived,
so an edited file changes only its edited chunks: a one-file edit re-encodes a few chunks, never
the whole datastore.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.errors import FootnotesError, NotReadyError
from knowledge.progress import NoProgress, Progress

from ..config import KnnConfig
from ..generator import Generator
from .build import chunk_entries, key_size_of, model_fingerprint
from .datastore import Datastore

log = logging.getLogger(__name__)

GROUP_CHUNKS = 32  # chunks encoded between progress reports
SEGMENT_ENTRIES = 65_536  # entries gathered before they are written as one segment


@dataclass(frozen=True)
class DatastoreSyncReport:
    added_chunks: int
    removed_chunks: int
    entries: int  # live entries after the sync


def sync_datastore(store: Any, datastore: Datastore, generator: Generator, config: KnnConfig,
                   progress: Progress | None = None) -> DatastoreSyncReport:
    """Add the entries of manifest chunks the datastore lacks, tombstone those of chunks the manifest
    no longer has, and mark the datastore complete.  ``store``: a ``knowledge.store.KnowledgeStore``."""
    progress = progress or NoProgress()
    truth = store.manifest.all_chunk_ids()
    have = datastore.chunk_ids()
    removed = have - truth
    missing = sorted(truth - have)
    progress.start(len(missing), "kNN-LM datastore")
    pending: list = []
    added = 0
    for lo in range(0, len(missing), GROUP_CHUNKS):
        chunks = list(store.manifest.chunks(missing[lo : lo + GROUP_CHUNKS]).values())  # deleted meanwhile: skipped
        pending += chunk_entries(generator, chunks, config)
        added += len(chunks)
        if sum(len(e.values) for e in pending) >= SEGMENT_ENTRIES:
            datastore.apply(pending, removed)
            pending, removed = [], set()
        progress.advance(len(missing[lo : lo + GROUP_CHUNKS]))
    datastore.apply(pending, removed, complete=True)
    return DatastoreSyncReport(added, len(have - truth), len(datastore))


def open_datastore(root: Path, generator: Generator, config: KnnConfig, write: bool = True) -> Datastore:
    """The datastore folder ``root`` for this generator (emptied when it was built with another)."""
    return Datastore(root, model_fingerprint(generator.model), key_size_of(generator), config, write)


class DatastoreService:
    """One data dir's datastore and the background thread that keeps it in step with the knowledge
    store. :meth:`ready` hands the datastore to a question, or raises NotReadyError while it is built."""

    def __init__(self, root: Path, store: Any, generator: Generator, config: KnnConfig) -> None:
        self.root = Path(root)
        self.store = store
        self.generator = generator
        self.config = config
        self.datastore = open_datastore(self.root, generator, config, write=store is not None)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._progress = _Counter()
        self._error: str | None = None
        self._meta_stamp = self._stamp()

    def ready(self) -> Datastore:
        """The datastore, in step with the knowledge store; an update already running is awaited up to
        ``knn.sync_wait_seconds`` once the datastore was built in full."""
        if self.store is None or not self.datastore.writable:
            return self._as_is()
        if self._error is not None and not self.running:
            message = self._not_ready_message()
            self.start()  # try again in the background: the cause may have been fixed
            raise NotReadyError(message)
        if self._in_step() and not self.running:
            return self.datastore
        self.start()
        if self.datastore.complete and self._thread is not None:
            self._thread.join(self.config.sync_wait_seconds)
        if not self.running and self._error is None:
            return self.datastore
        raise NotReadyError(self._not_ready_message())

    def start(self) -> None:
        """Start a background update unless one is running."""
        with self._lock:
            if self.running:
                return
            self._error = None
            self._thread = threading.Thread(target=self._run, name="knn-datastore", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None, progress: Progress | None = None) -> None:
        """Wait for the running update (at most ``timeout`` seconds), showing its progress."""
        thread = self._thread
        if thread is None:
            return
        if progress is None:
            thread.join(timeout)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        shown_total, shown = -1, 0
        while thread.is_alive() and (deadline is None or time.monotonic() < deadline):
            thread.join(0.5)
            total, done = self._progress.total, self._progress.done
            if total != shown_total:
                progress.start(total, "kNN-LM datastore")
                shown_total, shown = total, 0
            progress.advance(done - shown)
            shown = done

    def build(self, progress: Progress | None = None) -> Datastore:
        """Bring the datastore in step now (in the background thread), waiting for it with progress;
        the CLI's way to a ready datastore."""
        if self.store is not None and self.datastore.writable and not self._in_step():
            self.start()
            self.wait(progress=progress)
        return self.ready()

    def close(self) -> None:
        self.wait()
        self.datastore.close()

    def _run(self) -> None:
        try:
            while not self._in_step():
                sync_datastore(self.store, self.datastore, self.generator, self.config, self._progress)
        except FootnotesError as exc:
            self._error = str(exc)
        except Exception as exc:  # the thread's edge: reported by the next question, not lost
            log.exception("building the kNN-LM datastore failed")
            self._error = f"{type(exc).__name__}: {exc}"

    def _in_step(self) -> bool:
        return self.datastore.complete and self.datastore.chunk_ids() == self.store.manifest.all_chunk_ids()

    def _as_is(self) -> Datastore:
        """Without a knowledge store (or beside the process that writes it): use what was built,
        re-opened when the writer committed since."""
        stamp = self._stamp()
        if stamp != self._meta_stamp:
            self.datastore = open_datastore(self.root, self.generator, self.config, write=False)
            self._meta_stamp = stamp
        if not self.datastore.complete:
            raise NotReadyError(
                f"the kNN-LM datastore {self.root} is not built yet"
                + ("" if self.store is None else " (another process is building it)")
                + "; try again shortly or use --mode rag-token"
            )
        return self.datastore

    def _stamp(self) -> int:
        meta = self.root / "meta.json"
        return meta.stat().st_mtime_ns if meta.exists() else 0

    def _not_ready_message(self) -> str:
        if self._error is not None:
            return (f"the kNN-LM datastore could not be built: {self._error}; fix that and ask again, "
                    "or use --mode rag-token")
        done, total = self._progress.done, self._progress.total
        return (f"the kNN-LM datastore is being built: {done} of {total} chunks; "
                "try again shortly or use --mode rag-token")


class _Counter:
    """Progress kept as numbers, read by other threads for the not-ready message."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def start(self, total: int, what: str) -> None:
        self.done, self.total = 0, total

    def advance(self, n: int = 1) -> None:
        self.done += n


_services: dict[Path, DatastoreService] = {}
_services_lock = threading.Lock()


def datastore_service(data_dir: Path, store: Any, generator: Generator, config: KnnConfig) -> DatastoreService:
    """The one service of ``data_dir/knn`` in this process (every engine and mode instance shares it)."""
    root = (Path(data_dir) / "knn").resolve()
    with _services_lock:
        service = _services.get(root)
        if service is None or service.generator is not generator or service.store is not store:
            if service is not None:
                service.close()
            service = _services[root] = DatastoreService(root, store, generator, config)
        return service

