"""The folder is the source of truth: derived indexes that are damaged, outdated or half written are
detected, rebuilt or reported with the command that fixes them, and a failed write never costs the
indexes as they were.

CLI-level cases run `footnotes` in a fresh process (tests/fake_cli.py: the fake embedder), so nothing
cached in memory hides a damaged file.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from knowledge.bm25 import BM25Index
from knowledge.dense import DenseIndex
from knowledge.errors import IndexUnusableError
from knowledge.kb import KnowledgeBase
from tests.conftest import assert_consistent, small_config
from tests.test_crash_safety import make_corpus
from tests.fakes import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
CONFIG = '[chunking]\nsize_tokens = 40\noverlap_tokens = 5\n\n[sources]\nkinds = ["folder"]\n'


@pytest.fixture
def cli(tmp_path):
    """Run `footnotes --config C --data-dir D ARGS` in a fresh process; returns the CompletedProcess."""
    config = tmp_path / "footnotes.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"

    def run(*args: str, extra_config: str = "") -> subprocess.CompletedProcess:
        if extra_config:
            config.write_text(CONFIG + extra_config)
        return subprocess.run([sys.executable, "-m", "tests.fake_cli", "--config", str(config), "--data-dir", str(data),
                               *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    run.data = data
    return run


def clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2 and one clear line on stderr that names the fix: never a stack trace."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("footnotes: error: "), proc.stderr
    for needle in needles:
        assert needle in last, last


def reopen(data: Path, folder: Path, write: bool = True, embedder=None) -> KnowledgeBase:
    return KnowledgeBase.open(small_config(), data, folder=folder, embedder=embedder or HashingEmbedder(), write=write)


def fresh_chunk_ids(folder: Path, tmp_path: Path) -> set[str]:
    """The chunk ids a clean ingest of the folder gives: what every repaired index must hold."""
    kb = reopen(tmp_path / "fresh-data", folder)
    try:
        kb.sync()
        return kb.store.manifest.all_chunk_ids()
    finally:
        kb.close()


def assert_matches_folder(data: Path, folder: Path, tmp_path: Path) -> None:
    kb = reopen(data, folder)
    try:
        assert_consistent(kb)
        assert kb.store.manifest.all_chunk_ids() == fresh_chunk_ids(folder, tmp_path)
    finally:
        kb.close()


# -- footnotes reindex ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_reindex_rebuilds_every_index_and_the_knn_datastore(cli, folder, tmp_path):
    from assistant.config import KnnConfig
    from assistant.knn.sync import open_datastore, sync_datastore
    from tests import tinylm

    (folder / "a.md").write_text("ada lovelace was born in london . she wrote the first program .\n")
    (folder / "b.md").write_text("marie curie was born in warsaw . she discovered radium and polonium .\n")
    make_corpus(folder, 4, seed=3)
    gen = tinylm.make_generator()
    model_dir = tmp_path / "tiny"
    gen.model.save_pretrained(model_dir)
    gen.tokenizer.save_pretrained(model_dir)
    knn = f'\n[generator]\nmodel = "{model_dir}"\nthreads = 1\n\n[knn]\ncontext_tokens = 16\nstride_tokens = 8\n'
    assert cli("ingest", str(folder), extra_config=knn).returncode == 0
    kb = reopen(cli.data, folder)
    datastore = open_datastore(cli.data / "knn", gen, KnnConfig(context_tokens=16, stride_tokens=8))
    sync_datastore(kb.store, datastore, gen, KnnConfig(context_tokens=16, stride_tokens=8))
    datastore.close()
    truth = kb.store.manifest.all_chunk_ids()
    kb.close()

    for name in ("manifest.sqlite3", "bm25.npz", "chroma/chroma.sqlite3", "knn/meta.json"):
        (cli.data / name).write_bytes(os.urandom(3000))
    clean_failure(cli("status"), "manifest", "footnotes reindex")
    clean_failure(cli("reindex"), "footnotes reindex PATH")  # the manifest that named the folder is gone
    assert (cli.data / "bm25.npz").exists()  # ... and nothing was wiped before that was known

    proc = cli("reindex", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "wiped; rebuilding from" in proc.stderr and "kNN-LM datastore rebuilt" in proc.stderr
    assert "added 6," in proc.stdout
    status = json.loads(cli("status", "--json").stdout)
    assert status["documents"] == 6
    assert status["chunks"] == {"manifest": len(truth), "chroma": len(truth), "bm25": len(truth)}
    meta = json.loads((cli.data / "knn" / "meta.json").read_text())
    assert meta["complete"] and set(meta["live"]) == truth
    hits = json.loads(cli("search", "marie curie radium", "--k", "1", "--json").stdout)
    assert hits[0]["source"] == "b.md"
    assert_matches_folder(cli.data, folder, tmp_path)


def test_reindex_refuses_while_another_process_writes(cli, folder, tmp_path):
    (folder / "a.md").write_text("Lighthouses guide ships.\n")
    kb = reopen(cli.data, folder)  # holds the writer lock, like a running `footnotes watch`
    try:
        kb.sync()
        clean_failure(cli("reindex", str(folder)), "being written by")
        assert kb.store.manifest.document_count() == 1  # nothing was wiped under it
    finally:
        kb.close()


# -- detection at start ------------------------------------------------------------------------------
@pytest.fixture
def ingested(cli, folder):
    make_corpus(folder, 20, seed=5)
    (folder / "kettle.md").write_text("# Kettle\n\nThe kettle whistles when the water boils.\n")
    assert cli("ingest", str(folder)).returncode == 0
    return cli


def test_garbage_manifest_is_reported_with_the_fix(ingested):
    (ingested.data / "manifest.sqlite3").write_bytes(os.urandom(5000))
    for command in (("status",), ("search", "kettle"), ("ingest", "--json", str(ingested.data.parent / "knowledge"))):
        clean_failure(ingested(*command), "manifest", "unreadable", "footnotes reindex")


def test_damaged_manifest_pages_are_reported_not_a_stack_trace(ingested):
    path = ingested.data / "manifest.sqlite3"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 8192] = os.urandom(8192)  # the header survives, some pages do not
    path.write_bytes(bytes(raw))
    clean_failure(ingested("status"), "manifest", "footnotes reindex")


def test_manifest_from_a_newer_footnotes_is_left_untouched(ingested):
    path = ingested.data / "manifest.sqlite3"
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.execute("CREATE TABLE future_things (x)")
    db.commit()
    db.close()
    before = path.read_bytes()
    clean_failure(ingested("search", "kettle"), "schema version 99", "footnotes reindex")
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other format"])
def test_bad_bm25_file_is_rebuilt_from_the_manifest(ingested, folder, damage):
    path = ingested.data / "bm25.npz"
    if damage == "garbage":
        path.write_bytes(os.urandom(2000))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        np.savez(path, **{**arrays, "format_version": np.array(999)})
    hits = json.loads(ingested("search", "kettle whistles", "--json").stdout)  # a reader: rebuilt in memory
    assert hits[0]["source"] == "kettle.md" and hits[0]["bm25_score"] > 0
    proc = ingested("ingest", str(folder))
    assert proc.returncode == 0 and "rebuilding it from the manifest" in proc.stderr
    status = json.loads(ingested("status", "--json").stdout)["chunks"]
    assert status["bm25"] == status["manifest"]
    assert len(BM25Index.load(path)) == status["manifest"]  # saved again, whole


def test_chroma_that_fails_to_open_is_rebuilt_by_a_writer_and_reported_to_a_reader(ingested, folder, tmp_path):
    (ingested.data / "chroma" / "chroma.sqlite3").write_bytes(os.urandom(5000))
    clean_failure(ingested("search", "kettle"), "Chroma", "footnotes reindex")
    proc = ingested("ingest", "--json", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "rebuilding it from the manifest and the embedding cache" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["chunks_embedded"] == 0  # every vector came from the cache
    hits = json.loads(ingested("search", "kettle whistles", "--json").stdout)
    assert hits[0]["source"] == "kettle.md" and hits[0]["dense_score"] > 0.5
    assert_matches_folder(ingested.data, folder, tmp_path)


def test_indexes_whose_ids_disagree_with_the_manifest_are_reconciled_at_open(folder, open_kb, tmp_path):
    make_corpus(folder, 15, seed=8)
    kb = open_kb()
    kb.sync()
    ids = sorted(kb.store.manifest.all_chunk_ids())
    kb.store.dense.delete(ids[:5])
    kb.store.dense.upsert(["orphan-1", "orphan-2"], np.ones((2, 64), np.float32) / 8, ["gone.md", "gone.md"])
    kb.store.bm25.remove_many(ids[-5:])
    kb.store.bm25.add("orphan-3", "text of a document that is gone")
    kb.store.save()
    kb.close()
    again = reopen(tmp_path / "data", folder)
    try:
        assert_consistent(again)
        assert again.store.manifest.all_chunk_ids() == set(ids)
    finally:
        again.close()


def test_filtered_dense_search_skips_ids_chroma_does_not_hold(tmp_path):
    """A reader whose manifest is ahead of Chroma (a writer crashed before reconciling) still gets the
    held ids' hits for a path/type filter, not chromadb's "Error finding id"."""
    dense = DenseIndex(small_config().index, tmp_path / "data")
    try:
        vectors = np.eye(3, 64, dtype=np.float32)  # (3, D)
        dense.upsert(["a", "b", "c"], vectors, ["a.md", "b.md", "c.md"])
        hits = dense.search(vectors[1], 5, allowed=["b", "c", "missing-1", "missing-2"])
        assert [cid for cid, _ in hits] == ["b", "c"]
        assert hits[0][1] == pytest.approx(1.0)
        assert dense.search(vectors[0], 5, allowed=["missing-1"]) == []
    finally:
        dense.close()


class _WritingElsewhere:
    """Chroma's collection as another process's write leaves it for a moment: a read of the vectors of
    ``adding`` fails with chromadb's "Error finding id" (seen in CI: `footnotes search` while `footnotes
    watch` added a file)."""

    def __init__(self, collection, adding):
        self.collection, self.adding, self.reads = collection, set(adding), []

    def get(self, ids=None, include=None, **kwargs):
        self.reads.append(list(ids))
        if self.adding & set(ids) and include == ["embeddings"]:
            raise RuntimeError("Error executing plan: Internal error: Error finding id")
        return self.collection.get(ids=ids, include=include, **kwargs)

    def __getattr__(self, name):
        return getattr(self.collection, name)


def test_exact_scores_skip_ids_another_process_is_still_adding(tmp_path):
    dense = DenseIndex(small_config().index, tmp_path / "data")
    writing = _WritingElsewhere(dense._collection, adding=["c"])
    try:
        vectors = np.eye(3, 64, dtype=np.float32)  # (3, D)
        dense.upsert(["a", "b", "c"], vectors, ["a.md", "b.md", "c.md"])
        dense._collection = writing
        assert dense.similarities(vectors[0], ["a", "b", "c"]) == pytest.approx({"a": 1.0, "b": 0.0})
        assert writing.reads == [["a", "b", "c"], ["a"], ["b"], ["c"]]  # the batch, then one by one
        assert dense.similarities(vectors[1], ["b"]) == pytest.approx({"b": 1.0})  # one read when nothing fails
        writing.adding = {"a", "b", "c"}
        assert dense.similarities(vectors[0], ["a", "c"]) == {}
    finally:
        dense._collection = writing.collection
        dense.close()


def test_chroma_holding_foreign_vectors_is_caught_by_the_probe(folder, open_kb, tmp_path):
    make_corpus(folder, 15, seed=9)
    (folder / "kettle.md").write_text("# Kettle\n\nThe kettle whistles when the water boils.\n")
    kb = open_kb()
    kb.sync()
    ids = sorted(kb.store.manifest.all_chunk_ids())
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(ids), 64)).astype(np.float32)
    kb.store.dense.upsert(ids, noise / np.linalg.norm(noise, axis=1, keepdims=True), ["x"] * len(ids))
    kb.close()
    with pytest.raises(IndexUnusableError, match="not hashing-64's; run `footnotes reindex`"):
        reopen(tmp_path / "data", folder, write=False)
    writer = reopen(tmp_path / "data", folder)
    try:
        hits = writer.retriever.search_dense("kettle whistles water boils", 1)
        assert hits[0].doc_id == "kettle.md" and hits[0].dense_score > 0.5
        assert_consistent(writer)
    finally:
        writer.close()


def test_embedding_model_change_re_embeds_for_a_writer_and_stops_a_reader(folder, tmp_path):
    make_corpus(folder, 10, seed=10)
    (folder / "kettle.md").write_text("# Kettle\n\nThe kettle whistles when the water boils.\n")
    data = tmp_path / "data"
    first = reopen(data, folder)
    first.sync()
    first.close()
    other = HashingEmbedder(dim=32)  # another model (name and size); an int8 -> float32 switch is the same case
    with pytest.raises(IndexUnusableError, match="built with hashing-64, the config asks for hashing-32"):
        reopen(data, folder, write=False, embedder=other)
    writer = reopen(data, folder, embedder=other)
    try:
        assert writer.store.dense.count() == writer.store.manifest.chunk_count()
        hit = writer.retriever.search_dense("kettle whistles water boils", 1)[0]
        assert hit.doc_id == "kettle.md" and hit.dense_score > 0.5
        writer.sync()
        assert_consistent(writer)
    finally:
        writer.close()
    reopen(data, folder, write=False, embedder=HashingEmbedder(dim=32)).close()  # readers are welcome again


# -- a write that fails mid-way ------------------------------------------------------------------------
class _FullDisk:
    """An SQLite connection whose ``n``-th write of document chunks fails as SQLite fails on a full disk."""

    def __init__(self, db: sqlite3.Connection, n: int) -> None:
        self.db, self.left = db, n

    def __getattr__(self, name):
        return getattr(self.db, name)

    def executemany(self, sql, rows):
        if sql.startswith("INSERT INTO chunks"):
            self.left -= 1
            if self.left == 0:
                raise sqlite3.OperationalError("database or disk is full")
        return self.db.executemany(sql, rows)


def _fail_bm25_save(monkeypatch):
    real = BM25Index.save

    def save(self, path):
        real(self, Path(path).with_suffix(".partial.npz"))  # half the work is done, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(BM25Index, "save", save)


def _fail_chroma_upsert(monkeypatch):
    real = DenseIndex.upsert

    def upsert(self, ids, vectors, doc_ids):
        half = len(ids) // 2
        real(self, ids[:half], vectors[:half], doc_ids[:half])
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "chroma.sqlite3")

    monkeypatch.setattr(DenseIndex, "upsert", upsert)


def _fail_manifest(monkeypatch, kb):
    monkeypatch.setattr(kb.store.manifest, "_db", _FullDisk(kb.store.manifest._db, n=3))


FAILURES = {
    "bm25 save, disk full": (_fail_bm25_save, "could not write the BM25 index", "No space left on device"),
    "chroma upsert, permission denied": (_fail_chroma_upsert, "could not write the dense index (Chroma)",
                                         "Permission denied"),
    "manifest, disk full": (_fail_manifest, "could not write the manifest", "database or disk is full"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_failed_write_is_reported_keeps_the_old_state_and_the_next_sync_converges(case, folder, open_kb, tmp_path,
                                                                                   monkeypatch):
    inject, which, why = FAILURES[case]
    make_corpus(folder, 12, seed=11)
    (folder / "kettle.md").write_text("# Kettle\n\nThe kettle whistles when the water boils.\n")
    kb = open_kb()
    kb.sync()
    before = kb.store.manifest.all_chunk_ids()
    make_corpus(folder, 16, seed=12)  # 12 edited, 4 new
    (folder / "d000.md").unlink()
    (folder / "teapot.md").write_text("# Teapot\n\nA teapot keeps the brew warm.\n")
    with monkeypatch.context() as patch:
        inject(patch, kb) if case.startswith("manifest") else inject(patch)
        with pytest.raises(IndexUnusableError) as failed:
            kb.sync()
    message = str(failed.value)
    assert which in message and why in message and "free disk space" in message and "sync again" in message
    assert kb.store.dirty
    # the indexes as they were still answer, and nothing half-written is served
    hits = kb.retriever.search("kettle whistles", 3)
    assert hits[0].doc_id == "kettle.md"
    known = kb.store.manifest.all_chunk_ids()
    assert all(h.chunk.chunk_id in known for h in kb.retriever.search("w1 w2 w3 teapot brew", 20))
    if case.startswith("bm25"):
        assert len(BM25Index.load(tmp_path / "data" / "bm25.npz").ids() & before) == len(before)  # old file intact
    kb.sync()  # the disk has room again
    assert not kb.store.dirty
    assert_consistent(kb)
    assert kb.store.manifest.all_chunk_ids() == fresh_chunk_ids(folder, tmp_path)
    assert kb.retriever.search("teapot brew", 1)[0].doc_id == "teapot.md"


def test_failed_ingest_is_one_clear_line_on_the_command_line(folder, tmp_path, monkeypatch, capsys):
    import knowledge.kb
    from ui.cli import main

    monkeypatch.setattr(knowledge.kb, "SentenceTransformerEmbedder", lambda config: HashingEmbedder())
    config = tmp_path / "footnotes.toml"
    config.write_text(CONFIG)
    make_corpus(folder, 5, seed=13)
    _fail_bm25_save(monkeypatch)
    argv = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "ingest", str(folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("footnotes: error: could not write the BM25 index") and "No space left" in err[-1]
    monkeypatch.undo()
    monkeypatch.setattr(knowledge.kb, "SentenceTransformerEmbedder", lambda config: HashingEmbedder())
    assert main(argv) == 0
    assert_matches_folder(tmp_path / "data", folder, tmp_path)


# -- the watcher: a burst of 1,000 events, and lost events ---------------------------------------------
def folder_state(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*.md") if p.is_file()}


def index_state(kb) -> dict[str, str]:
    return {d.doc_id: d.version for d in kb.store.manifest.documents() if d.status == "indexed"}


def wait_for(condition, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def watching(folder, tmp_path):
    import threading

    kb = KnowledgeBase.open(small_config(rescan_seconds=3600.0), tmp_path / "data", folder=folder,
                            embedder=HashingEmbedder())
    kb.sync()
    stop, synced = threading.Event(), threading.Event()
    threads = kb.watch(stop, on_report=lambda report: synced.set())
    assert synced.wait(10)  # the catch-up sync every watcher starts with is done: from now on, events only
    yield kb
    stop.set()
    for t in threads:
        t.join(timeout=10)
    kb.close()


def test_a_burst_of_1000_file_events_converges(folder, watching):
    import random

    make_corpus(folder, 30, seed=20)
    rng = random.Random(21)
    words = [f"w{i}" for i in range(300)]
    (folder / "sub").mkdir()
    for i in range(1000):  # creates, edits, renames (also into and out of a sub-folder), deletes
        files = sorted(folder.rglob("*.md"))
        op = rng.choice(["create", "edit", "rename", "delete"]) if len(files) > 10 else "create"
        if op == "create":
            (rng.choice([folder, folder / "sub"]) / f"n{i}.md").write_text(" ".join(rng.choices(words, k=30)))
        elif op == "edit":
            rng.choice(files).write_text(" ".join(rng.choices(words, k=rng.randint(5, 60))))
        elif op == "rename":
            rng.choice(files).rename(rng.choice([folder, folder / "sub"]) / f"m{i}.md")
        else:
            rng.choice(files).unlink()
    assert wait_for(lambda: index_state(watching) == folder_state(folder), 60)
    assert_consistent(watching)


def test_inotify_queue_overflow_triggers_a_full_rescan(folder, watching, monkeypatch):
    import time

    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD

    from knowledge import watcher

    with monkeypatch.context() as lost:  # the kernel drops these events
        lost.setattr(watcher._DirtySet, "on_any_event", lambda self, event: None)
        make_corpus(folder, 8, seed=22)
        (folder / "kettle.md").write_text("# Kettle\n\nThe kettle whistles when the water boils.\n")
        time.sleep(1.5)  # longer than the debounce: nothing was seen, nothing synced
    assert "kettle.md" not in index_state(watching)
    # what the kernel sends when its queue overflowed, through watchdog's own handling of it
    InotifyFD.get_instance().handle_event(InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b""))
    assert wait_for(lambda: index_state(watching) == folder_state(folder), 15)
    assert_consistent(watching)


def test_an_unknown_event_kind_means_rescan_everything(folder):
    from watchdog.events import FileSystemEvent

    from knowledge.sources.folder import FolderSource
    from knowledge.watcher import _DirtySet

    class Mystery(FileSystemEvent):
        event_type = "mystery"

    dirty = _DirtySet(FolderSource(folder))
    dirty.on_any_event(Mystery(str(folder / "a.md")))
    assert dirty.take().everything
