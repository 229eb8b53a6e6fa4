"""What the knowledge page and ``GET /v1/documents`` show: every document with its state, and the
indexed text of one document for the source viewer; deleting a document from the folder."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.errors import DocumentError
from knowledge.kb import KnowledgeBase
from knowledge.sources.base import Change
from knowledge.sources.folder import FolderSource, is_candidate
from knowledge.sync import Syncer
from knowledge.types import Chunk, SyncReport

PENDING = "pending"  # in the folder, not (or not yet in this version) in the indexes


class DocumentNotFound(DocumentError):
    status = 404


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    source: str  # the source kind: "folder", "web"
    status: str  # "indexed", "failed" or "pending"
    chunks: int
    error: str = ""
    updated_at: str | None = None  # ISO time of the last index change, UTC

    def to_json(self) -> dict[str, Any]:
        return {"source": self.doc_id, "kind": self.source, "status": self.status, "chunks": self.chunks,
                "error": self.error, "updated_at": self.updated_at}


def list_documents(kb: KnowledgeBase) -> list[DocumentInfo]:
    """Every document the manifest knows, plus the folder's files it has not indexed yet, by id."""
    manifest = kb.store.manifest
    records = {r.doc_id: r for r in manifest.documents()}
    out: dict[str, DocumentInfo] = {}
    for r in records.values():
        when = dt.datetime.fromtimestamp(r.updated_at, dt.timezone.utc).isoformat(timespec="seconds")
        out[r.doc_id] = DocumentInfo(r.doc_id, r.source, r.status, len(manifest.chunk_ids_of(r.doc_id)), r.error, when)
    folder = kb.source("folder")
    if folder is not None:
        for ref in folder.documents():
            known = records.get(ref.doc_id)
            if known is None:
                out[ref.doc_id] = DocumentInfo(ref.doc_id, "folder", PENDING, 0)
            elif known.stamp != ref.stamp:
                out[ref.doc_id] = DocumentInfo(ref.doc_id, "folder", PENDING, out[ref.doc_id].chunks,
                                               "changed on disk; being re-indexed", out[ref.doc_id].updated_at)
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
    """Remove a document's file from the knowledge folder and its chunks from both indexes now
    (the watcher would do the same a moment later).

    Only a document the index lists is removed: a supported, not ignored file of the folder that the
    manifest holds (indexed or failed) or that waits to be indexed. Anything else in the folder (hidden
    files, ``.git``, images, partial downloads, folders, links out of the folder) is DocumentNotFound
    and stays where it is.
    """
    folder = kb.source("folder")
    record = kb.store.manifest.document(doc_id)
    if record is not None and record.source != "folder":
        raise DocumentError(f"{doc_id} comes from the {record.source} source; remove it from that source's "
                            "settings in config.toml (e.g. sources.urls) instead")
    if folder is None:
        raise DocumentError("no knowledge folder is open; start `footnotes serve --knowledge DIR`")
    path = _deletable_path(folder, doc_id, listed=record is not None)
    try:
        if path is not None:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise DocumentError(f"{doc_id} could not be deleted ({exc.strerror or exc}); check the folder's "
                            "permissions") from None
    return Syncer(kb.store, folder).sync(Change(frozenset({doc_id})))


def _deletable_path(folder: FolderSource, doc_id: str, listed: bool) -> Path | None:
    """The folder entry to unlink for ``doc_id`` (None: the manifest lists it but its file is gone);
    DocumentNotFound for anything that is not a document of the folder."""
    not_found = DocumentNotFound(f"{doc_id!r} is not a document of the knowledge folder {folder.root} (only "
                                 "indexed, failed or pending documents can be deleted); refresh the document list")
    if not is_candidate(doc_id, folder.ignore):
        raise not_found
    path = Path(os.path.abspath(folder.root / doc_id))  # the entry itself: a symlink is removed, not its target
    if folder.doc_id_of(path) != doc_id:
        raise not_found
    if folder.ref(doc_id) is not None:  # a regular file inside the folder (a link is followed inside only)
        return path
    if listed and not (path.exists() or path.is_symlink()):
        return None
    if listed and path.is_symlink():  # a link the manifest knows that now points elsewhere or nowhere
        return path
    raise not_found
