"""Sync: make the store match a source — add, update and delete — idempotently and crash-safely.

Order of writes for one document: new chunks go into Chroma and BM25 first, then the manifest
records the document in one transaction, then chunks no longer referenced leave both indexes.
A crash between any two steps leaves only orphans or gaps that ``KnowledgeStore.reconcile`` fixes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .chunking import chunk_document
from .errors import DocumentError
from .loaders import load_document
from .manifest import DocumentRecord, now
from .progress import NoProgress, Progress
from .sources.base import Change, Source
from .store import KnowledgeStore
from .types import Chunk, DocumentRef, Failure, SyncReport

log = logging.getLogger(__name__)
_GROUP_CHUNKS = 2000  # chunks embedded together (across documents: fewer, fuller batches)


@dataclass
class _Tally:
    """What one sync has done so far (becomes the frozen SyncReport)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    embedded: int = 0
    reused: int = 0

    def report(self, removed: Sequence[str], unchanged: int) -> SyncReport:
        return SyncReport(added=tuple(self.added), updated=tuple(self.updated), removed=tuple(removed),
                          unchanged=unchanged, failed=tuple(self.failed), chunks_embedded=self.embedded,
                          chunks_reused=self.reused)


@dataclass(frozen=True)
class _Prepared:
    ref: DocumentRef
    version: str
    chunks: tuple[Chunk, ...]


class Syncer:
    """Applies a source's documents to a KnowledgeStore."""

    def __init__(self, store: KnowledgeStore, source: Source, kind: str | None = None) -> None:
        self.store = store
        self.source = source
        self.kind = kind or source.kind  # what the manifest records the source's documents under
        cfg = store.config
        self._chunking_signature = (
            f"{store.embedder.name}/{cfg.chunking.size_tokens}/{cfg.chunking.overlap_tokens}"
        )

    def sync(self, change: Change | None = None, progress: Progress | None = None) -> SyncReport:
        """Sync everything (``change`` None or ``everything``) or just the documents a change names."""
        progress = progress or NoProgress()
        with self.store.sync_lock:
            if self.store.dirty:  # a write failed last time: orphans or gaps may be left
                self.store.reconcile(progress)
            try:
                return self._sync(change, progress)
            except BaseException:
                self.store.dirty = True
                raise

    def _sync(self, change: Change | None, progress: Progress) -> SyncReport:
        full = change is None or change.everything
        rechunk = self.store.manifest.get_meta(f"chunking:{self.kind}") != self._chunking_signature
        current, gone = self._diff(change, full)
        work = [ref for ref in current if self._stale(ref, force=rechunk and full)]
        for doc_id in gone:
            self._remove(doc_id)
        tally = self._apply(work, progress)
        self.store.save()
        self.store.manifest.prune_embedding_cache()  # the old texts of edited and deleted documents
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.store.manifest.set_meta("last_sync", stamp)
        if full:
            self.store.manifest.set_meta(f"chunking:{self.kind}", self._chunking_signature)
        return tally.report(gone, unchanged=len(current) - len(work))

    # -- deciding what to do ------------------------------------------------------------------
    def _diff(self, change: Change | None, full: bool) -> tuple[list[DocumentRef], list[str]]:
        """The documents to look at now, and the ids that left the source."""
        known = {d.doc_id: d for d in self.store.manifest.documents(self.kind)}
        if full:
            current = list(self.source.documents())
            listed = {r.doc_id for r in current}
            return current, sorted(set(known) - listed)
        assert change is not None
        current, gone = [], []
        for doc_id in sorted(change.doc_ids):
            ref = self._ref(doc_id)
            if ref is None:
                if doc_id in known:
                    gone.append(doc_id)
                gone.extend(k for k in known if k.startswith(doc_id.rstrip("/") + "/"))  # it was a folder
            else:
                current.append(ref)
        for prefix in sorted(change.prefixes):
            under = list(self.source.documents_under(prefix))
            listed = {r.doc_id for r in under}
            current.extend(under)
            root = prefix.rstrip("/") + "/"
            gone.extend(k for k in known if k.startswith(root) and k not in listed)
        return list({r.doc_id: r for r in current}.values()), sorted(set(gone))

    def _ref(self, doc_id: str) -> DocumentRef | None:
        """The source's current entry of one id; one that cannot even be looked at (a bug in a source
        plugin, an odd file system error) is logged and treated as gone, and the sync goes on."""
        try:
            return self.source.ref(doc_id)
        except Exception:  # noqa: BLE001 - the edge of one document
            log.exception("could not look up %s in the %s source; treating it as gone", doc_id, self.kind)
            return None

    def _stale(self, ref: DocumentRef, force: bool) -> bool:
        """Whether to read the document again: changed, new, or failed last time (its cause may be fixed
        without its stamp changing: permissions, a link target, a configuration)."""
        record = self.store.manifest.document(ref.doc_id)
        return force or record is None or record.stamp != ref.stamp or record.status == "failed"

    # -- doing it -----------------------------------------------------------------------------
    def _apply(self, refs: Iterable[DocumentRef], progress: Progress) -> _Tally:
        out = _Tally()
        group: list[_Prepared] = []
        size = 0
        for ref in refs:
            prepared = self._prepare(ref, out)
            if prepared is None:
                continue
            group.append(prepared)
            size += len(prepared.chunks)
            if size >= _GROUP_CHUNKS:
                self._commit(group, progress, out)
                group, size = [], 0
        self._commit(group, progress, out)
        return out

    def _prepare(self, ref: DocumentRef, out: _Tally) -> _Prepared | None:
        manifest = self.store.manifest
        try:
            raw = self.source.fetch(ref.doc_id)
            version = hashlib.sha256(raw.data).hexdigest()
            record = manifest.document(ref.doc_id)
            if record and record.version == version and record.status == "indexed" and not self._rechunk_needed():
                manifest.touch_document(ref.doc_id, raw.stamp or ref.stamp)
                return None
            cfg = self.store.config
            loaded = load_document(raw, cfg.sources.max_file_bytes)
            chunks = chunk_document(loaded, self.store.embedder.token_spans, cfg.chunking.size_tokens,
                                    cfg.chunking.overlap_tokens)
            if not chunks:
                raise DocumentError(f"{ref.doc_id} has no text to index; add text or remove the file")
        except DocumentError as exc:
            self._record_failure(ref, str(exc), out)
            return None
        except Exception as exc:  # noqa: BLE001 - the edge of one document: a bug in a loader or a source
            log.exception("unexpected error while reading %s", ref.doc_id)
            self._record_failure(ref, f"{ref.doc_id} could not be indexed ({type(exc).__name__}: {exc}); "
                                      "see the log, fix or remove the file", out)
            return None
        return _Prepared(DocumentRef(ref.doc_id, raw.stamp or ref.stamp), version, tuple(chunks))

    def _rechunk_needed(self) -> bool:
        return self.store.manifest.get_meta(f"chunking:{self.kind}") != self._chunking_signature

    def _commit(self, group: list[_Prepared], progress: Progress, out: _Tally) -> None:
        if not group:
            return
        store = self.store
        old_ids = {p.ref.doc_id: store.manifest.chunk_ids_of(p.ref.doc_id) for p in group}
        fresh = [c for p in group for c in p.chunks if c.chunk_id not in old_ids[p.ref.doc_id]]
        vectors, computed = store.embed_chunks(fresh, progress)
        store.add_chunks(fresh, vectors)
        out.embedded += computed
        out.reused += sum(len(p.chunks) for p in group) - computed
        for p in group:
            existed = store.manifest.document(p.ref.doc_id) is not None
            store.manifest.replace_document(
                DocumentRecord(p.ref.doc_id, self.kind, p.ref.stamp, p.version, "indexed", "", now()), p.chunks
            )
            store.drop_chunks(sorted(old_ids[p.ref.doc_id] - {c.chunk_id for c in p.chunks}))
            (out.updated if existed else out.added).append(p.ref.doc_id)

    def _record_failure(self, ref: DocumentRef, error: str, out: _Tally) -> None:
        self._fail(ref, error)
        out.failed.append(Failure(ref.doc_id, error))

    def _fail(self, ref: DocumentRef, error: str) -> None:
        """Record a failure; the document's old chunks leave the indexes (never serve stale text)."""
        old = self.store.manifest.chunk_ids_of(ref.doc_id)
        self.store.manifest.replace_document(
            DocumentRecord(ref.doc_id, self.kind, ref.stamp, "", "failed", error, now()), []
        )
        self.store.drop_chunks(sorted(old))

    def _remove(self, doc_id: str) -> None:
        old = self.store.manifest.chunk_ids_of(doc_id)
        self.store.manifest.remove_document(doc_id)
        self.store.drop_chunks(sorted(old))

