"""The built-in ``folder`` source: every supported file under a directory, recursively.

Hidden files and folders, editor swap and temporary files are ignored; symlinks are followed only
when they stay inside the folder, and each directory is visited once (symlink loops are safe). Its
settings are ``[sources.folder]``; it is writable (uploads are saved into it, deletes unlink files) and
watched with watchdog (folder_watcher.py).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..config import SourcesConfig
from ..errors import ConfigError, DocumentError, DocumentNotFound, IndexUnusableError
from ..loaders import SUPPORTED_SUFFIXES, effective_suffix
from ..types import DocumentRef, RawDocument
from .base import Change, WritableSource

if TYPE_CHECKING:
    from ..uploads import SavedUpload

FOLDER_META = "folder_root"  # the manifest meta key of the folder ingested last

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


@dataclass(frozen=True)
class FolderSettings:
    path: str = ""  # the knowledge folder; "" = the one given on the command line or ingested last
    ignore: tuple[str, ...] = ()  # extra glob patterns (relative paths) the folder source skips
    debounce_seconds: float = 0.4  # quiet time after the last file event before a sync runs
    rescan_seconds: float = 300.0  # full rescan of the folder while watching: a safety net for lost events


class FolderSource(WritableSource):
    """Documents are files below ``root``; a document id is its POSIX path relative to ``root``."""

    kind = "folder"
    Settings = FolderSettings
    lists_locally = True

    def __init__(self, root: str | Path, max_bytes: int = 50_000_000, ignore: Sequence[str] = (),
                 rescan_seconds: float = 300.0, debounce_seconds: float = 0.4) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"knowledge folder {self.root} does not exist or is not a folder: create it or pass another")
        self.max_bytes = max_bytes
        self.ignore = tuple(ignore)
        self.rescan_seconds = rescan_seconds
        self.debounce_seconds = debounce_seconds

    @classmethod
    def from_config(cls, config: SourcesConfig, data_dir: Path, folder: str | Path | None) -> FolderSource | None:
        """The folder named on the command line, else ``[sources.folder] path``, else the one ingested last."""
        settings = config.settings_for(cls)
        root = folder or settings.path or recorded_folder(data_dir)
        if not root:
            return None
        return cls(root, config.max_file_bytes, settings.ignore, settings.rescan_seconds, settings.debounce_seconds)

    def remember(self) -> dict[str, str]:
        return {FOLDER_META: str(self.root)}

    def describe(self) -> str:
        return str(self.root)

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

    def watch(self, on_change: Callable[[Change], None], stop: threading.Event, interval: float | None = None) -> None:
        """Follow the folder's events, debounced by ``debounce_seconds`` unless ``interval`` is given."""
        from .folder_watcher import watch_folder

        debounce = self.debounce_seconds if interval is None else interval
        watch_folder(self, on_change, stop, debounce=debounce, rescan_seconds=self.rescan_seconds)

    # -- writable -------------------------------------------------------------------------------
    def save(self, name: str, data: bytes | Iterable[bytes], max_bytes: int) -> SavedUpload:
        from ..uploads import UploadRefused, save_upload

        missing = self.unavailable()
        if missing:
            raise UploadRefused(f"cannot save {name}: {missing}", status=503)
        return save_upload(self.root, name, data, max_bytes, self.ignore)

    def delete(self, doc_id: str, listed: bool) -> None:
        """Unlink a document's file. Only what the index lists is removed: a supported, not ignored file
        of the folder that the manifest holds (indexed or failed) or that waits to be indexed. Anything
        else (hidden files, ``.git``, images, partial downloads, folders, links out of the folder) is
        DocumentNotFound and stays where it is."""
        path = self._deletable_path(doc_id, listed)
        try:
            if path is not None:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise DocumentError(f"{doc_id} could not be deleted ({exc.strerror or exc}); check the folder's "
                                "permissions") from None

    def discard_partial_writes(self) -> list[str]:
        from ..uploads import remove_stale_uploads

        return remove_stale_uploads(self.root)

    def _deletable_path(self, doc_id: str, listed: bool) -> Path | None:
        """The folder entry to unlink for ``doc_id`` (None: the manifest lists it but its file is gone);
        DocumentNotFound for anything that is not a document of the folder."""
        not_found = DocumentNotFound(f"{doc_id!r} is not a document of the knowledge folder {self.root} (only "
                                     "indexed, failed or pending documents can be deleted); refresh the document list")
        if not is_candidate(doc_id, self.ignore):
            raise not_found
        path = Path(os.path.abspath(self.root / doc_id))  # the entry itself: a symlink is removed, not its target
        if self.doc_id_of(path) != doc_id:
            raise not_found
        if self.ref(doc_id) is not None:  # a regular file inside the folder (a link is followed inside only)
            return path
        if listed and not (path.exists() or path.is_symlink()):
            return None
        if listed and path.is_symlink():  # a link the manifest knows that now points elsewhere or nowhere
            return path
        raise not_found


def recorded_folder(data_dir: Path) -> str | None:
    """The folder ingested last into ``data_dir``, if its manifest is readable (read only: nothing created)."""
    from ..manifest import Manifest
    from ..status import MANIFEST_FILE

    manifest_path = Path(data_dir) / MANIFEST_FILE
    if not manifest_path.is_file():
        return None
    try:
        manifest = Manifest(manifest_path)
        try:
            return manifest.get_meta(FOLDER_META)
        finally:
            manifest.close()
    except IndexUnusableError:
        return None  # unreadable: the folder has to be named


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
