"""The Source protocol: what a knowledge source must do.

A source lists its documents (stable id + cheap change stamp) and fetches one document's bytes.
``documents`` and ``fetch`` are the only abstract methods; change reporting has a polling default
built on ``documents`` that a source may replace with something faster (the folder source uses
watchdog).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pathlib import Path

from ..config import SourcesConfig
from ..types import DocumentRef, RawDocument


@dataclass(frozen=True)
class Change:
    """Documents that may have changed. ``doc_ids`` empty and ``everything`` True means: rescan all."""

    doc_ids: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()  # whole sub-trees (a moved or deleted directory)
    everything: bool = False


class Source(ABC):
    """A knowledge source. ``kind`` is its entry-point name; ``name`` tells instances apart."""

    kind: str = ""

    @classmethod
    def from_config(cls, config: SourcesConfig, data_dir: Path, folder: str | Path | None) -> Source | None:
        """The source as configured, or None when the config does not ask for it (no folder, no URLs)."""
        raise NotImplementedError(f"source kind '{cls.kind}' cannot be built from config.toml")

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
        listing differs. Blocks; run it in a thread.
        """
        last = _listing(self)
        while not stop.wait(interval):
            now = _listing(self)
            if now != last:
                last = now
                on_change(Change(everything=True))


def _listing(source: Source) -> dict[str, str]:
    return {ref.doc_id: ref.stamp for ref in source.documents()}
