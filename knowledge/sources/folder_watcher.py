"""How the folder source watches its folder: watchdog events, debounced into Changes.

Every event only marks paths dirty; once no event has arrived for ``debounce`` seconds the dirty
set is reported as one Change. A file is read when it has been closed (or when a burst of writes
stopped), editors' write-temp-then-rename saves arrive as a move onto the real name, and a moved or
deleted directory is reported as a whole sub-tree. Lost events mean a full rescan: when the kernel's
inotify queue overflows (watchdog only logs it, it sends no event), on an event of a kind we do not
know, and periodically, as a safety net.
"""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..errors import FootnotesError
from .base import Change

if TYPE_CHECKING:
    from .folder import FolderSource

log = logging.getLogger(__name__)


_KNOWN_EVENTS = frozenset({"created", "modified", "attrib", "deleted", "moved", "closed"})
MAX_OPEN_WAIT = 30.0  # seconds a file held open by a writer waits for its close before it is read anyway
_WATCHDOG_LOGGER = "watchdog.observers.inotify_c"  # logs "Inotify queue overflowed; filesystem events were lost"


class _OverflowAlarm(logging.Handler):
    """Marks everything dirty when watchdog reports that the inotify queue overflowed."""

    def __init__(self, dirty: _DirtySet) -> None:
        super().__init__(logging.WARNING)
        self.dirty = dirty

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.dirty.mark_everything()


class _DirtySet(FileSystemEventHandler):
    """Collects the document ids and sub-trees that events touched."""

    def __init__(self, source: FolderSource) -> None:
        self.source = source
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.last_event = 0.0
        self.doc_ids: set[str] = set()
        self.prefixes: set[str] = set()
        self.everything = False
        self.open_files: dict[str, tuple[int, float]] = {}  # doc id -> (opens not yet closed, first open)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "closed") and not event.is_directory:
            self._count_open(event)
        if event.event_type in ("opened", "closed_no_write") or (event.is_directory and event.event_type in ("modified", "attrib")):
            return
        if event.event_type not in _KNOWN_EVENTS:
            log.warning("unexpected file event %r: rescanning the whole folder", event)
            self.mark_everything()
            return
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        with self.lock:
            for i, path in enumerate(paths):
                doc_id = self.source.doc_id_of(path if isinstance(path, str) else path.decode())
                if doc_id is None:
                    self.everything = self.everything or event.is_directory  # the root itself moved
                    continue
                is_new_tree = event.is_directory and (event.event_type == "created" or i == 1)
                (self.prefixes if is_new_tree else self.doc_ids).add(doc_id)
            self.last_event = time.monotonic()
        self.wake.set()

    def _count_open(self, event: FileSystemEvent) -> None:
        """A file is ready when it is closed: count the opens of each file not closed yet (our own
        reads open and close it too, with no write)."""
        path = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
        doc_id = self.source.doc_id_of(path)
        if doc_id is None:
            return
        with self.lock:
            count, since = self.open_files.get(doc_id, (0, time.monotonic()))
            count += 1 if event.event_type == "opened" else -1
            if count > 0:
                self.open_files[doc_id] = (count, since)
            else:
                self.open_files.pop(doc_id, None)

    def _held_open(self) -> set[str]:
        """Dirty documents still open (for writing, as far as we know) and not open too long."""
        now = time.monotonic()
        return {d for d in self.doc_ids if d in self.open_files and now - self.open_files[d][1] < MAX_OPEN_WAIT}

    def mark_everything(self) -> None:
        with self.lock:
            self.everything = True
        self.wake.set()

    def take(self) -> Change | None:
        """The dirty set as one Change, without the files still open for writing (they stay dirty,
        and the loop keeps polling until they are closed)."""
        with self.lock:
            held = self._held_open()
            ready = self.doc_ids - held
            if not (ready or self.prefixes or self.everything):
                return None
            change = Change(frozenset(ready), frozenset(self.prefixes), self.everything)
            self.doc_ids, self.prefixes, self.everything = held, set(), False
            if not held:
                self.wake.clear()
            return change

    def quiet_for(self) -> float:
        with self.lock:
            return time.monotonic() - self.last_event


class _RootWatch:
    """The observer's watch on the folder, re-armed when the folder is deleted and created again
    (an inotify watch follows the old directory, so a new one of the same name would go unheard)."""

    def __init__(self, source: FolderSource, observer: Observer, handler: _DirtySet) -> None:
        self.source, self.observer, self.handler = source, observer, handler
        self.watch = None
        self.identity: tuple[int, int] | None = None

    def check(self) -> bool:
        """Re-arm the watch if the folder is another directory now (or gone); True when it changed."""
        identity = _identity(self.source.root)
        if identity == self.identity:
            return False
        if self.watch is not None:
            try:
                self.observer.unschedule(self.watch)
            except (KeyError, OSError):  # the emitter already stopped with its deleted directory
                pass
            self.watch = None
        if identity is not None:
            try:
                self.watch = self.observer.schedule(self.handler, str(self.source.root), recursive=True)
            except OSError as exc:  # vanished again in between: the next check retries
                log.warning("cannot watch %s yet (%s)", self.source.root, exc)
                identity = None
        if identity is None and self.identity is not None:
            log.warning("the knowledge folder %s is gone; waiting for it to come back", self.source.root)
        elif identity is not None and self.identity is not None:
            log.warning("the knowledge folder %s is back; watching it again", self.source.root)
        self.identity = identity
        return True


def _identity(root) -> tuple[int, int] | None:
    try:
        st = root.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def watch_folder(source: FolderSource, on_change: Callable[[Change], None], stop: threading.Event,
                 debounce: float = 0.4, rescan_seconds: float = 300.0, retry_seconds: float = 5.0) -> None:
    """Report changes under ``source.root`` until ``stop`` is set. Blocks; run it in a thread.

    Nothing that goes wrong in a sync ends the loop: the error is logged, the sync is retried after
    ``retry_seconds`` (per-document errors are recorded against their document by the sync itself).
    """
    dirty = _DirtySet(source)
    alarm = _OverflowAlarm(dirty)
    logging.getLogger(_WATCHDOG_LOGGER).addHandler(alarm)
    observer = Observer()
    root = _RootWatch(source, observer, dirty)
    root.check()
    observer.start()
    dirty.mark_everything()  # catch up with whatever changed before the observer was listening
    next_rescan = time.monotonic() + rescan_seconds
    try:
        while not stop.is_set():
            dirty.wake.wait(timeout=min(1.0, max(0.05, next_rescan - time.monotonic())))
            if root.check():  # the folder went away or came back: everything changed
                dirty.mark_everything()
            if time.monotonic() >= next_rescan:
                dirty.mark_everything()
                next_rescan = time.monotonic() + rescan_seconds
            if stop.is_set() or not dirty.wake.is_set():
                continue
            while (quiet := dirty.quiet_for()) < debounce and not stop.is_set():
                time.sleep(debounce - quiet)
            change = dirty.take()
            if change is None:
                if dirty.wake.is_set():  # only files still open for writing: look again shortly
                    stop.wait(debounce)
                continue
            try:
                on_change(change)
            except Exception as exc:  # noqa: BLE001 - the watcher's edge: log, retry, never die
                if isinstance(exc, (FootnotesError, OSError)):
                    log.error("sync after file changes failed: %s; retrying in %.0f s", exc, retry_seconds)
                else:
                    log.exception("sync after file changes failed; retrying in %.0f s", retry_seconds)
                stop.wait(retry_seconds)
                dirty.mark_everything()
    finally:
        logging.getLogger(_WATCHDOG_LOGGER).removeHandler(alarm)
        observer.stop()
        observer.join(timeout=5)
