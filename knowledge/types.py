"""Frozen dataclasses passed between the knowledge pipeline's stages."""

from __future__ import annotations

from dataclasses import dataclass, field

INDEX_TEXT_VERSION = 2  # bump when Chunk.index_text changes: vectors and BM25 entries are rebuilt


@dataclass(frozen=True)
class DocumentRef:
    """A document a source lists, before it is read.

    ``doc_id`` is stable (a path relative to the folder, or a URL); ``stamp`` is a cheap
    change marker (mtime+size, ETag, ...) used to skip unchanged documents without reading them.
    """

    doc_id: str
    stamp: str


@dataclass(frozen=True)
class RawDocument:
    """The bytes of one document, as fetched from its source."""

    doc_id: str
    data: bytes
    suffix: str  # file type, lower-case with the dot: ".md", ".pdf", ".html"
    stamp: str = ""


@dataclass(frozen=True)
class LoadedDocument:
    """A document turned into plain text. Offsets of every chunk point into ``text``."""

    doc_id: str
    text: str
    headings: tuple[tuple[int, int, str], ...] = ()  # (char offset, level 1..6, title), in order


@dataclass(frozen=True)
class Chunk:
    """A piece of a loaded document: ``text == document.text[start:end]``."""

    chunk_id: str
    doc_id: str
    start: int
    end: int
    text: str
    heading_path: tuple[str, ...] = ()
    # The embedder's token ids of ``text`` (no special tokens) when the chunker had them; None for a chunk read
    # back from the manifest. Not part of the chunk's identity.
    token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def suffix(self) -> str:
        from .paths import suffix_of

        return suffix_of(self.doc_id)

    @property
    def index_text(self) -> str:
        """What both indexes see: the chunk's context (its heading path, else its file's name), then its text.

        A section like "Early life: She was born in Warsaw" names neither the person nor the topic;
        its heading path ("Marie Curie > Early life") does.
        """
        context = self.index_context
        return f"{context}\n{self.text}" if context else self.text

    @property
    def index_context(self) -> str:
        """The part of ``index_text`` before the chunk's text (and a newline); "" when there is none."""
        from .paths import title_of

        return " > ".join(self.heading_path) or title_of(self.doc_id)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with the scores that ranked it (``None`` where a retriever did not see it)."""

    chunk: Chunk
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None

    @property
    def chunk_id(self) -> str:
        return self.chunk.chunk_id

    @property
    def doc_id(self) -> str:
        return self.chunk.doc_id

    def to_json(self) -> dict:
        c = self.chunk
        return {
            "chunk_id": c.chunk_id,
            "source": c.doc_id,
            "start": c.start,
            "end": c.end,
            "heading_path": list(c.heading_path),
            "text": c.text,
            "score": self.score,
            "dense_score": self.dense_score,
            "bm25_score": self.bm25_score,
        }


@dataclass(frozen=True)
class Failure:
    """A document that could not be indexed, and why (with how to fix it)."""

    doc_id: str
    error: str


@dataclass(frozen=True)
class SyncReport:
    """What one sync did."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    failed: tuple[Failure, ...] = field(default_factory=tuple)
    chunks_embedded: int = 0
    chunks_reused: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def to_json(self) -> dict:
        """The report as `footnotes ingest --json` prints it."""
        return {
            "added": list(self.added), "updated": list(self.updated), "removed": list(self.removed),
            "unchanged": self.unchanged, "failed": [{"source": f.doc_id, "error": f.error} for f in self.failed],
            "chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused,
        }


@dataclass(frozen=True)
class Reconciled:
    """What ``KnowledgeStore.reconcile`` repaired: chunks added to and removed from each index."""

    bm25_added: int = 0
    bm25_removed: int = 0
    dense_added: int = 0
    dense_removed: int = 0
