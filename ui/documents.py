"""What the knowledge page and ``GET /v1/documents`` show: every document with its state, and the
indexed text of one document for the source viewer; deleting a document from its (writable) source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.errors import DocumentError, DocumentNotFound, UnknownNameError
from knowledge.kb import KnowledgeBase
from knowledge.registry import SOURCES_GROUP, load_plugin
from knowledge.sources.base import Change, WritableSource
from knowledge.sync import Syncer
from knowledge.types import Chunk, SyncReport

__all__ = ["DocumentInfo", "DocumentNotFound", "delete_document", "document_text", "indexed_text", "list_documents"]
PENDING = "pending"  # in a source, not (or not yet in this version) in the indexes


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    kind: str  # the source kind: "folder", "web"
    status: str  # "indexed", "failed" or "pending"
    chunks: int
    error: str = ""
    updated_at: str | None = None  # ISO time of the last index change, UTC
    deletable: bool = False  # its source is writable: the page offers to delete it (not in the JSON)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.doc_id, "kind": self.kind, "status": self.status, "chunks": self.chunks,
                "error": self.error, "updated_at": self.updated_at}


def list_documents(kb: KnowledgeBase) -> list[DocumentInfo]:
    """Every document the manifest knows, plus what the sources that list locally hold and have not
    indexed yet, by id."""
    manifest = kb.store.manifest
    records = {r.doc_id: r for r in manifest.documents()}
    writable = {s.kind for s in kb.writable_sources()}
    out: dict[str, DocumentInfo] = {}
    for r in records.values():
        when = dt.datetime.fromtimestamp(r.updated_at, dt.timezone.utc).isoformat(timespec="seconds")
        out[r.doc_id] = DocumentInfo(r.doc_id, r.kind, r.status, len(manifest.chunk_ids_of(r.doc_id)), r.error, when,
                                     r.kind in writable)
    for source in (s for s in kb.sources if s.lists_locally):
        for ref in source.documents():
            known = records.get(ref.doc_id)
            if known is None:
                out[ref.doc_id] = DocumentInfo(ref.doc_id, source.kind, PENDING, 0, deletable=source.kind in writable)
            elif known.stamp != ref.stamp:
                out[ref.doc_id] = DocumentInfo(ref.doc_id, source.kind, PENDING, out[ref.doc_id].chunks,
                                               "changed on disk; being re-indexed", out[ref.doc_id].updated_at,
                                               source.kind in writable)
    return [out[k] for k in sorted(out)]


def indexed_text(chunks: Sequence[Chunk]) -> str:
    """The document text as it was indexed, rebuilt from its chunks so that every chunk's offsets
    point into it (``text[c.start:c.end] == c.text``). Stretches no chunk covers (whitespace between
    sections) are filled with newlines."""
    parts: list[str] = []
    pos = 0
    for c in sorted(chunks, key=lambda c: (c.start, c.end)):
        if c.end <= pos:
            continue
        if c.start > pos:
            parts.append("\n" * (c.start - pos))
            pos = c.start
        parts.append(c.text[pos - c.start:])
        pos = c.end
    return "".join(parts)


def document_text(kb: KnowledgeBase, doc_id: str) -> str:
    """The indexed text of one document; DocumentNotFound when it is not indexed (any more)."""
    chunks = kb.store.manifest.document_chunks(doc_id)
    if not chunks:
        raise DocumentNotFound(f"{doc_id} is not in the index (deleted, failed or not synced yet); "
                               "refresh the document list")
    return indexed_text(chunks)


def delete_document(kb: KnowledgeBase, doc_id: str) -> SyncReport:
    """Remove a document from its writable source and its chunks from both indexes now (the source's
    watcher would do the same a moment later). The source decides what is one of its documents
    (``WritableSource.delete``); a document of another source is refused with where to remove it."""
    record = kb.store.manifest.document(doc_id)
    source = _owner(kb, doc_id, record.kind if record is not None else None)
    source.delete(doc_id, listed=record is not None)
    return Syncer(kb.store, source).sync(Change(frozenset({doc_id})))


def _owner(kb: KnowledgeBase, doc_id: str, kind: str | None) -> WritableSource:
    """The writable source a document belongs to: the one of the kind the manifest names, else (a
    document not indexed yet) the first writable source that lists it, else the first writable source
    (which then says that it is not one of its documents)."""
    if kind is not None and not _writable_kind(kind):
        raise DocumentError(f"{doc_id} comes from the {kind} source; remove it from that source's settings "
                            f"([sources.{kind}] in config.toml) instead")
    writable = kb.writable_sources()
    if kind is not None:
        owner = next((s for s in writable if s.kind == kind), None)
    else:
        owner = next((s for s in writable if s.ref(doc_id) is not None), writable[0] if writable else None)
    if owner is None:
        raise DocumentError("no knowledge folder is open; start `footnotes serve --knowledge DIR`")
    return owner


def _writable_kind(kind: str) -> bool:
    try:
        return issubclass(load_plugin(SOURCES_GROUP, kind, "source"), WritableSource)
    except UnknownNameError:  # a kind no longer installed: nothing can delete from it
        return False
