"""The watcher keeps the indexes in step with a real directory: each kind of change, end to end."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from tests.conftest import assert_consistent


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached within the timeout")


@pytest.fixture
def watching(folder, open_kb):
    (folder / "seed.md").write_text("Seed document about lighthouses.\n")
    kb = open_kb()
    kb.sync()
    stop = threading.Event()
    kb.indexed = []  # (doc id, its text in the manifest right after the sync that indexed it), in order
    kb.reads = []  # every document id the watcher's syncs read from the folder, in order
    (source,) = kb.sources
    fetch = source.fetch

    def counted_fetch(doc_id):
        kb.reads.append(doc_id)
        return fetch(doc_id)

    source.fetch = counted_fetch

    def record(report):
        for doc_id in report.added + report.updated:
            kb.indexed.append((doc_id, texts_of(kb, doc_id)))

    threads = kb.watch(stop, on_report=record)
    time.sleep(0.3)  # the observer is scheduled
    yield kb
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert_consistent(kb)


def texts_of(kb, doc_id: str) -> str:
    return "".join(c.text for c in kb.store.manifest.document_chunks(doc_id))


def indexed_versions(kb, doc_id: str) -> list[str]:
    """Every text of ``doc_id`` that a sync of the watcher indexed, in order."""
    return [text for d, text in kb.indexed if d == doc_id]


def docs(kb) -> set[str]:
    return {d.doc_id for d in kb.store.manifest.documents() if d.status == "indexed"}


def bm25_sources(kb, query: str) -> set[str]:
    return {h.doc_id for h in kb.retriever.search_bm25(query, 10)}


def test_created_file_is_indexed(watching, folder):
    (folder / "new.md").write_text("A note about volcanoes.\n")
    wait_until(lambda: bm25_sources(watching, "volcanoes") == {"new.md"})


def test_modified_file_is_reindexed(watching, folder):
    with open(folder / "seed.md", "a") as fh:
        fh.write("\nAlso about foghorns.\n")
    wait_until(lambda: bm25_sources(watching, "foghorns") == {"seed.md"})


def test_deleted_file_leaves_both_indexes(watching, folder):
    (folder / "seed.md").unlink()
    wait_until(lambda: docs(watching) == set())
    with watching.store.sync_lock:  # the sync that removed it has finished
        assert watching.store.dense.count() == 0 and len(watching.store.bm25) == 0


def test_renamed_file_moves(watching, folder):
    (folder / "seed.md").rename(folder / "moved.md")
    wait_until(lambda: docs(watching) == {"moved.md"})
    assert bm25_sources(watching, "lighthouses") == {"moved.md"}


def test_editor_save_by_temp_file_and_rename(watching, folder):
    tmp = folder / ".seed.md.swp"
    tmp.write_text("Rewritten by the editor: now about glaciers.\n")
    os.replace(tmp, folder / "seed.md")
    wait_until(lambda: bm25_sources(watching, "glaciers") == {"seed.md"})
    assert bm25_sources(watching, "lighthouses") == set()


def test_directory_created_moved_and_deleted(watching, folder, tmp_path):
    outside = tmp_path / "incoming"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep/a.md").write_text("Walruses rest on ice.\n")
    (outside / "b.txt").write_text("Narwhals have tusks.\n")
    shutil.move(str(outside), str(folder / "arctic"))  # a whole tree arrives at once
    wait_until(lambda: docs(watching) >= {"arctic/deep/a.md", "arctic/b.txt"})
    (folder / "arctic").rename(folder / "polar")
    wait_until(lambda: docs(watching) == {"seed.md", "polar/deep/a.md", "polar/b.txt"})
    shutil.rmtree(folder / "polar")
    wait_until(lambda: docs(watching) == {"seed.md"})


def test_burst_of_writes_is_debounced_to_the_final_content(watching, folder):
    path = folder / "burst.md"
    for i in range(30):
        path.write_text(f"Version {i} mentions token{i}.\n")
    final = "Version 29 mentions token29."
    # the index shows a sync's result a moment before the watcher reports it: wait for both
    wait_until(lambda: bm25_sources(watching, "token29") == {"burst.md"}
               and final in indexed_versions(watching, "burst.md"))
    assert bm25_sources(watching, "token3") == set()
    versions = indexed_versions(watching, "burst.md")
    # 30 writes within milliseconds are one sync (two if a loaded machine stalls the writer for longer
    # than the debounce in the middle of the burst), and the last one indexed the final content
    assert 1 <= len(versions) <= 2 and versions[-1] == final, versions
    assert 1 <= watching.reads.count("burst.md") <= 2, watching.reads  # read once per sync, not once per write


def test_file_written_slowly_is_read_when_closed(watching, folder):
    path = folder / "slow.md"
    with open(path, "w") as fh:
        fh.write("Start of a slow write. ")
        fh.flush()
        time.sleep(1.0)  # longer than the debounce
        fh.write("The end mentions pelicans.\n")
    wait_until(lambda: bm25_sources(watching, "pelicans") == {"slow.md"})
    time.sleep(1.0)  # any later sync of it would have come by now
    # never indexed half-written: the pause was longer than the debounce, yet only the closed file was read
    assert indexed_versions(watching, "slow.md") == ["Start of a slow write. The end mentions pelicans."]
    assert watching.reads.count("slow.md") == 1, watching.reads  # not read while open, read once when closed
