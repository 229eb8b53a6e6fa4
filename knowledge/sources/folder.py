"""The built-in ``folder`` source: every supported file under a directory, recursively.

Hidden files and folders, editor swap and temporary files are ignored; symlinks are followed only
when they stay inside the folder, and each directory is visited once (symlink loops are safe).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from ..config import SourcesConfig
from ..errors import ConfigError, DocumentError
from ..loaders import SUPPORTED_SUFFIXES, effective_suffix
from ..types import DocumentRef, RawDocument
from .base import Change, Source

# Editor swap files, partial downloads, office lock files, vim's write test file.
IGNORED_NAMES = ("*~", "*.swp", "*.swo", "*.swx", "*.swpx", ".#*", "#*#", "*.tmp", "*.temp", "*.part",
                 "*.crdownload", "*.partial", "~$*", "4913", ".*")


def is_ignored(relpath: str, extra: Sequence[str] = ()) -> bool:
    """True for paths the folder source never indexes (any hidden component, swap/temp files)."""
    parts = PurePosixPath(relpath).parts
    if any(p.startswith(".") for p in parts):
        return True
    name = parts[-1] if parts else ""
    if any(fnmatch.fnmatch(name, pat) for pat in IGNORED_NAMES):
        return True
    return any(fnmatch.fnmatch(relpath, pat) for pat in extra)


def is_candidate(relpath: str, extra: Sequence[str] = ()) -> bool:
    """True for paths the folder source indexes: supported type and not ignored."""
    return not is_ignored(relpath, extra) and effective_suffix(relpath) in SUPPORTED_SUFFIXES


class FolderSource(Source):
    """Documents are files below ``root``; a document id is its POSIX path relative to ``root``."""

    kind = "folder"

    def __init__(self, root: str | Path, max_bytes: int = 50_000_000, ignore: Sequence[str] = (),
                 rescan_seconds: float = 300.0) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"knowledge folder {self.root} does not exist or is not a folder: create it or pass another")
        self.max_bytes = max_bytes
        self.ignore = tuple(ignore)
        self.rescan_seconds = rescan_seconds

    @classmethod
    def from_config(cls, config: SourcesConfig, data_dir: Path, folder: str | Path | None) -> FolderSource | None:
        return cls(folder, config.max_file_bytes, config.ignore, config.rescan_seconds) if folder else None

    def path_of(self, doc_id: str) -> Path:
        """The file of a document id, refusing ids that would escape the folder."""
        try:
            path = (self.root / doc_id).resolve()
        except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            raise DocumentError(f"{doc_id} cannot be resolved ({exc}); fix or remove the symlink") from None
        if not path.is_relative_to(self.root):
            raise DocumentError(f"{doc_id} is outside the knowledge folder {self.root}; it is not indexed")
        return path

    def doc_id_of(self, path: str | Path) -> str | None:
        """The document id of a path under the folder (not resolved through symlinks), or None."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def location(self, doc_id: str) -> str:
        return str(self.root / doc_id)

    def documents(self) -> Iterator[DocumentRef]:
        yield from self._walk(self.root, set())

    def documents_under(self, prefix: str) -> Iterator[DocumentRef]:
        try:
            start = self.path_of(prefix)
        except DocumentError:
            return iter(())
        return self._walk(start, set()) if start.is_dir() else iter(())

    def _walk(self, directory: Path, seen: set[tuple[int, int]]) -> Iterator[DocumentRef]:
        try:
            st = directory.stat()
            if (st.st_dev, st.st_ino) in seen or not directory.resolve().is_relative_to(self.root):
                return
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return  # vanished or unreadable directory: nothing to list
        for entry in entries:
            rel = Path(entry.path).relative_to(self.root).as_posix()
            if is_ignored(rel, self.ignore):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    yield from self._walk(Path(entry.path), seen)
                elif entry.is_file(follow_symlinks=True) and is_candidate(rel, self.ignore):
                    if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(self.root):
                        continue  # a link out of the folder is never followed
                    yield DocumentRef(rel, _stamp(entry.stat(follow_symlinks=True)))
            except OSError:
                continue

    def ref(self, doc_id: str) -> DocumentRef | None:
        """The current DocumentRef of one id, or None when it is gone or not indexable."""
        if not is_candidate(doc_id, self.ignore):
            return None
        try:
            path = self.path_of(doc_id)
            st = path.stat()
        except (OSError, DocumentError):
            return None
        return DocumentRef(doc_id, _stamp(st)) if stat.S_ISREG(st.st_mode) else None

    def fetch(self, doc_id: str) -> RawDocument:
        path = self.path_of(doc_id)
        try:
            data, stamp = _read_regular_file(path, self.max_bytes, doc_id)
        except FileNotFoundError:
            raise DocumentError(f"{doc_id} vanished while it was being read; it will be synced again if it returns") from None
        except PermissionError:
            raise DocumentError(f"{doc_id} cannot be read (permission denied); fix its permissions (chmod u+r)") from None
        except IsADirectoryError:
            raise DocumentError(f"{doc_id} is a folder, not a file") from None
        except OSError as exc:
            raise DocumentError(f"{doc_id} could not be read ({exc.strerror or exc})") from None
        if len(data) > self.max_bytes:
            raise DocumentError(
                f"{doc_id} grew over the limit of {self.max_bytes:,} bytes while being read; raise sources.max_file_bytes"
            )
        return RawDocument(doc_id, data, effective_suffix(doc_id), stamp)

    def unavailable(self) -> str | None:
        """Why the folder cannot be listed now (deleted, unmounted, replaced by a file), or None."""
        if self.root.is_dir():
            return None
        return (f"the knowledge folder {self.root} is missing (deleted, moved or unmounted): nothing is served "
                "from it until it is back; recreate it or restart with --knowledge DIR")

    def watch(self, on_change: Callable[[Change], None], stop: threading.Event, interval: float = 0.4) -> None:
        from ..watcher import watch_folder

        watch_folder(self, on_change, stop, debounce=interval, rescan_seconds=self.rescan_seconds)


def _read_regular_file(path: Path, max_bytes: int, doc_id: str) -> tuple[bytes, str]:
    """(at most max_bytes + 1 bytes, stamp) of a regular file. Opened without blocking and checked
    after opening, so a FIFO, socket or device that took the file's place is refused at once instead
    of stalling the sync."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DocumentError(f"{doc_id} is not a regular file (a folder, pipe, socket or device); remove it or "
                                "replace it with a file")
        if st.st_size > max_bytes:
            raise DocumentError(f"{doc_id} is {st.st_size:,} bytes, over the limit of {max_bytes:,}; split the file "
                                "or raise sources.max_file_bytes in config.toml")
        os.set_blocking(fd, True)
        return fh.read(max_bytes + 1), _stamp(os.fstat(fd))


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}:{st.st_size}"
