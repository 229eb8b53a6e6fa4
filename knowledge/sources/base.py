"""The Source protocol: what a knowledge source must do.

A source lists its documents (stable id + cheap change stamp) and fetches one document's bytes.
``documents`` and ``fetch`` are the only abstract methods; change reporting has a polling default
built on ``documents`` that a source may replace with something faster (the folder source uses
watchdog). A kind declares its settings as a frozen dataclass, ``Settings``, read from its own
``[sources.<kind>]`` table (timings included: each source watches on its own clock). A source the
page can add files to and delete documents from is a ``WritableSource``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..config import SourcesConfig
from ..types import DocumentRef, RawDocument

if TYPE_CHECKING:
    from ..uploads import SavedUpload


@dataclass(frozen=True)
class NoSettings:
    """The settings of a source kind that has none: its ``[sources.<kind>]`` table, if any, is empty."""


@dataclass(frozen=True)
class Change:
    """Documents that may have changed. ``doc_ids`` empty and ``everything`` True means: rescan all."""

    doc_ids: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()  # whole sub-trees (a moved or deleted directory)
    everything: bool = False


class Source(ABC):
    """A knowledge source. ``kind`` is its entry-point name; ``name`` tells instances apart."""

    kind: str = ""
    Settings: ClassVar[type] = NoSettings  # a frozen dataclass, parsed from [sources.<kind>]
    lists_locally: ClassVar[bool] = False  # documents() reads only local state: the documents list may show
    # what it holds and has not indexed yet (a network source lists only what it indexed)

    @classmethod
    def from_config(cls, config: SourcesConfig, data_dir: Path, folder: str | Path | None) -> Source | None:
        """The source as configured (its settings: ``config.settings_for(cls)``), or None when the config
        does not ask for it (no folder, no URLs). ``folder`` is a location given on the command line."""
        raise NotImplementedError(f"source kind '{cls.kind}' cannot be built from config.toml")

    def remember(self) -> dict[str, str]:
        """What a writing process records in the manifest's meta so the next open finds this source
        without being told (the folder source: the folder)."""
        return {}

    def describe(self) -> str:
        """What the source reads, for one line of a message (a folder's path, a number of URLs)."""
        return f"the {self.kind} source"

    @abstractmethod
    def documents(self) -> Iterator[DocumentRef]:
        """Every document the source holds now, without reading their contents."""

    @abstractmethod
    def fetch(self, doc_id: str) -> RawDocument:
        """The bytes of one document; raises DocumentError (why, how to fix) when it cannot."""

    def ref(self, doc_id: str) -> DocumentRef | None:
        """The current listing entry of one document, or None when the source no longer has it."""
        return next((r for r in self.documents() if r.doc_id == doc_id), None)

    def documents_under(self, prefix: str) -> Iterator[DocumentRef]:
        """The documents whose id lies below ``prefix`` (a folder-like id)."""
        root = prefix.rstrip("/") + "/"
        return (r for r in self.documents() if r.doc_id.startswith(root))

    def unavailable(self) -> str | None:
        """Why the source cannot be read at all right now (and what to do), or None when it can."""
        return None

    def location(self, doc_id: str) -> str:
        """Where a user can open the document (a path or URL)."""
        return doc_id

    def watch(self, on_change: Callable[[Change], None], stop: threading.Event, interval: float = 60.0) -> None:
        """Call ``on_change`` whenever documents may have changed, until ``stop`` is set.

        Default: poll ``documents()`` every ``interval`` seconds and report a full rescan when the
        listing differs. A source with a timing setting overrides the default with it. Blocks; run it
        in a thread.
        """
        last = _listing(self)
        while not stop.wait(interval):
            now = _listing(self)
            if now != last:
                last = now
                on_change(Change(everything=True))


class WritableSource(Source):
    """A source the page and the API can add files to and delete documents from (the folder source).

    The page offers uploads and deletes for every writable source, whatever its kind; a sync then
    indexes or removes the document as it does any change of the source."""

    @abstractmethod
    def save(self, name: str, data: bytes | Iterable[bytes], max_bytes: int) -> SavedUpload:
        """Store a file sent under ``name`` (untrusted: sanitised), atomically; UploadRefused says why not."""

    @abstractmethod
    def delete(self, doc_id: str, listed: bool) -> None:
        """Remove a document from the source itself. ``listed``: the manifest holds it (its file may
        already be gone). DocumentNotFound for anything that is not one of its documents."""

    def discard_partial_writes(self) -> list[str]:
        """Remove what an interrupted ``save`` left (called when a writer opens the source)."""
        return []


def _listing(source: Source) -> dict[str, str]:
    return {ref.doc_id: ref.stamp for ref in source.documents()}
