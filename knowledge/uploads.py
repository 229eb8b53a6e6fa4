"""Files dropped into the web page or posted to the API, saved into a folder (``FolderSource.save``).

A name from a browser is untrusted: only its last path component is kept, reduced to a safe
character set, and the result must stay directly inside the folder. Type and size are checked
before anything is written; the file is written to a hidden temp file in the folder (which the
watcher ignores) and renamed onto its name in one step, so the watcher never reads half a file.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DocumentError
from .loaders import SUPPORTED_SUFFIXES, effective_suffix
from .sources.folder import is_candidate

MAX_NAME_BYTES = 200  # well under the 255-byte limit of common file systems
_UNSAFE = re.compile(r"[^\w.\- ()+,@=]", re.UNICODE)
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
READ_BLOCK = 1 << 20
UPLOAD_TEMP_PREFIX = ".upload-"  # hidden: the watcher never indexes a half-written upload


class UploadRefused(DocumentError):
    """An upload that is not saved; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SavedUpload:
    doc_id: str  # the document id the folder source will give it (its name in the folder)
    path: Path
    size: int
    replaced: bool  # a file of that name was there and now holds the new content


def sanitize_filename(name: str) -> str:
    """A safe file name for an uploaded file: the last path component only (``/`` and ``\\`` both
    separate), Unicode NFC, no control or shell-special characters, no leading dots (hidden files are
    not indexed), at most MAX_NAME_BYTES bytes with the suffix kept. Raises UploadRefused if nothing
    usable is left."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")  # control, format, surrogates
    base = _UNSAFE.sub("_", base).strip(" .")
    base = re.sub(r"_{2,}", "_", base).lstrip("._- ")
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    if stem.lower() in _WINDOWS_RESERVED:
        stem = f"{stem}_"
    base = f"{stem}.{suffix}" if dot else stem
    base = _truncate(base, MAX_NAME_BYTES)
    if not base or base in (".", "..") or not base.strip("._- "):
        raise UploadRefused(f"the file name {name!r} has no usable characters; rename the file and upload it again")
    return base


def _truncate(name: str, limit: int) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 16:
        stem, dot, suffix = name, "", ""
    keep = limit - len((dot + suffix).encode())
    stem = stem.encode()[:keep].decode(errors="ignore").rstrip(" .")
    return f"{stem}{dot}{suffix}"


def check_type(name: str, ignore: Iterable[str] = ()) -> None:
    """Refuse (415) a name whose file type has no loader, or that the folder source would skip."""
    suffix = effective_suffix(name)
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadRefused(
            f"{name}: file type '{suffix or '(none)'}' is not supported; supported: "
            f"{' '.join(sorted(SUPPORTED_SUFFIXES))}", status=415)
    if not is_candidate(name, tuple(ignore)):
        raise UploadRefused(f"{name}: this name is ignored by the knowledge folder (temp, swap or "
                            "[sources.folder] ignore pattern); rename the file", status=415)


def check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise UploadRefused(f"{name} is {size:,} bytes, over the upload limit of {max_bytes:,} bytes; split the "
                            "file or raise server.max_upload_bytes in config.toml", status=413)


def save_upload(folder: Path, name: str, data: bytes | Iterable[bytes], max_bytes: int,
                ignore: Iterable[str] = ()) -> SavedUpload:
    """Save one uploaded file directly inside ``folder`` under its sanitised name, atomically.

    ``data`` is the content or an iterable of blocks (read until the limit is passed, never further).
    An existing file of the same name is replaced (a new version of that document).
    """
    root = Path(folder).resolve()
    safe = sanitize_filename(name)
    check_type(safe, ignore)
    target = root / safe
    if target.parent != root:  # cannot happen after sanitising; checked anyway
        raise UploadRefused(f"{name!r} would be saved outside the knowledge folder; it was refused")
    if target.is_dir() and not target.is_symlink():
        raise UploadRefused(f"{safe} is a folder inside the knowledge folder; rename the file", status=409)
    blocks = iter([data] if isinstance(data, (bytes, bytearray)) else data)
    replaced = target.exists() or target.is_symlink()
    try:
        fd, tmp = tempfile.mkstemp(prefix=UPLOAD_TEMP_PREFIX, suffix=".tmp", dir=root)  # hidden + .tmp: never indexed
    except OSError as exc:
        raise UploadRefused(f"cannot save {safe} into {root} ({exc.strerror or exc}); check that the knowledge "
                            "folder exists and is writable", status=503) from None
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for block in blocks:
                size += len(block)
                if size > max_bytes:
                    check_size(safe, size + sum(len(b) for b in blocks), max_bytes)  # the real size in the message
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # a symlink of that name is replaced itself, never followed
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UploadRefused(f"cannot save {safe} into {root} ({exc.strerror or exc}); check the folder's free "
                            "space and permissions", status=507 if exc.errno == errno.ENOSPC else 500) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return SavedUpload(safe, target, size, replaced)


def remove_stale_uploads(folder: Path) -> list[str]:
    """Delete the temporary files of uploads a crash interrupted (``.upload-*.tmp`` directly in the
    folder); call it at start, when no upload can be under way. Returns the names removed."""
    removed = []
    for path in Path(folder).glob(f"{UPLOAD_TEMP_PREFIX}*.tmp"):
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path.name)
        except OSError:
            continue  # not ours to fight over; the next start tries again
    return removed


def read_blocks(path: Path, block: int = READ_BLOCK) -> Iterable[bytes]:
    """The content of a file in blocks (for copying from the web framework's temp file)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            yield chunk
