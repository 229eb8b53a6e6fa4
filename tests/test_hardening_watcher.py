"""Hardening from an adversarial pass (issue 11), the watcher side: while `serve` runs, a symlink loop,
a FIFO, a deleted and recreated knowledge folder, or a failed file fixed in place never stop the
watcher or the sync, and nothing hangs."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from knowledge.errors import DocumentError
from knowledge.sources.base import Change
from knowledge.sync import Syncer
from ui.server import create_app
from tests.ui_fixtures import service, wait_for, watching  # noqa: F401 - service is a fixture


@pytest.fixture
def client(service) -> TestClient:
    return TestClient(create_app(service, with_ui=False), raise_server_exceptions=False)


def statuses(client) -> dict[str, str]:
    return {d["source"]: d["status"] for d in client.get("/v1/documents").json()["documents"]}


def indexed(client, name: str):
    return lambda: statuses(client).get(name) == "indexed"


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("watch-")]


# -- 4. a symlink loop created while serving ------------------------------------------------------
@pytest.mark.parametrize("make_loop", [
    lambda f: os.symlink("selfloop.md", f / "selfloop.md"),
    lambda f: (os.symlink("b.md", f / "a.md"), os.symlink("a.md", f / "b.md")),
    lambda f: (os.mkdir(f / "d"), os.symlink("..", f / "d" / "up"), os.symlink("loop.md", f / "d" / "loop.md")),
])
def test_a_symlink_loop_created_while_serving_leaves_the_watcher_alive(client, service, make_loop) -> None:
    folder = service.folder()
    with watching(service):
        time.sleep(0.3)
        make_loop(folder)
        time.sleep(1.5)  # the loop's events are synced
        (folder / "after.md").write_text("# After\n\nthe watcher still indexes new files .\n")
        wait_for(indexed(client, "after.md"), timeout=15)
        assert all(t.is_alive() for t in watcher_threads())
    assert {"curie.md", "ada.md", "turing.md", "after.md"} <= set(statuses(client))


def test_an_unexpected_error_in_one_document_is_recorded_against_it_and_the_sync_goes_on(service, monkeypatch) -> None:
    folder = service.folder()
    source = service.kb.source("folder")
    real_fetch = source.fetch
    (folder / "bad.md").write_text("# Bad\n\nthis one breaks the loader .\n")
    (folder / "good.md").write_text("# Good\n\nthis one is fine .\n")

    def fetch(doc_id: str):
        if doc_id == "bad.md":
            raise RuntimeError("something no one expected")
        return real_fetch(doc_id)
    monkeypatch.setattr(source, "fetch", fetch)
    report = Syncer(service.kb.store, source).sync(Change(frozenset({"bad.md", "good.md"})))
    assert report.added == ("good.md",)
    assert [f.doc_id for f in report.failed] == ["bad.md"] and "something no one expected" in report.failed[0].error
    record = service.kb.store.manifest.document("bad.md")
    assert record.status == "failed" and "RuntimeError" in record.error


# -- 5. a FIFO never blocks the sync ---------------------------------------------------------------
def test_fetching_a_fifo_fails_at_once(service) -> None:
    fifo = service.folder() / "pipe.md"
    os.mkfifo(fifo)
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(errors, service.kb.source("folder").fetch, "pipe.md"), daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive(), "fetch blocked on a FIFO"
    assert isinstance(errors[0], DocumentError) and "not a regular file" in str(errors[0])


def _catch(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        errors.append(exc)


def test_a_file_replaced_by_a_fifo_in_the_middle_of_a_sync_is_recorded_and_the_sync_ends(service) -> None:
    from knowledge.sources.folder import FolderSource

    folder = service.folder()

    class SwappedAfterListing(FolderSource):
        """The race of the adversarial pass: the file is listed as a regular file, then replaced by a FIFO
        before it is read."""

        def ref(self, doc_id):
            found = super().ref(doc_id)
            if found is not None and doc_id == "ada.md":
                os.unlink(folder / doc_id)
                os.mkfifo(folder / doc_id)
            return found

    (folder / "ada.md").write_text("# Ada\n\nchanged, so it is read again .\n")
    source = SwappedAfterListing(folder)
    done: list = []
    t = threading.Thread(target=lambda: done.append(Syncer(service.kb.store, source).sync(
        Change(frozenset({"ada.md"})))), daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "the sync blocked on a FIFO"
    assert [f.doc_id for f in done[0].failed] == ["ada.md"] and "not a regular file" in done[0].failed[0].error


def test_a_file_replaced_by_a_fifo_during_serving_stalls_nothing(client, service) -> None:
    folder = service.folder()
    with watching(service):
        os.unlink(folder / "ada.md")
        os.mkfifo(folder / "ada.md")
        (folder / "next.md").write_text("# Next\n\nindexed despite the pipe .\n")
        wait_for(indexed(client, "next.md"), timeout=15)
        started = time.monotonic()
        assert client.delete("/v1/documents/next.md").status_code == 200
        assert time.monotonic() - started < 5
        wait_for(lambda: "ada.md" not in statuses(client), timeout=15)
    report = service.kb.sync()[0]  # a full rescan with the FIFO in place ends too
    assert "ada.md" not in report.added


# -- 6. the knowledge folder deleted and recreated -------------------------------------------------
def test_a_deleted_and_recreated_folder_is_watched_again_and_nothing_stale_is_served(client, service) -> None:
    folder = service.folder()
    with watching(service):
        time.sleep(0.3)
        shutil.rmtree(folder)
        wait_for(lambda: client.get("/v1/documents").json()["summary"]["warnings"], timeout=10)
        summary = client.get("/v1/documents").json()["summary"]
        assert "missing" in summary["warnings"][0] and str(folder) in summary["warnings"][0]
        wait_for(lambda: not client.post("/v1/search", json={"query": "radium curie", "k": 5}).json(), timeout=10)
        assert client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "who discovered radium ?"}]}).status_code == 503
        r = client.post("/v1/documents", files={"file": ("new.md", b"# New\n\nnew text .\n")})
        assert r.status_code == 503 and "missing" in r.json()["error"]["message"]

        folder.mkdir()
        (folder / "back.md").write_text("# Back\n\nthe folder came back with polonium .\n")
        wait_for(indexed(client, "back.md"), timeout=15)  # seconds, not the 300 s rescan
        assert client.get("/v1/documents").json()["summary"]["warnings"] == []
        (folder / "later.md").write_text("# Later\n\nlive watching works again .\n")
        wait_for(indexed(client, "later.md"), timeout=15)
        os.unlink(folder / "back.md")
        wait_for(lambda: "back.md" not in statuses(client), timeout=15)
    hits = client.post("/v1/search", json={"query": "polonium", "k": 5}).json()
    assert all(h["source"] != "back.md" for h in hits)


# -- 7. failed documents are retried once their cause is fixed ----------------------------------------
def break_in_place(path: Path, bad: bytes, good: bytes) -> None:
    """Rewrite ``path`` with ``good`` keeping its size and mtime (the stamp does not change)."""
    assert len(bad) == len(good)
    st = path.stat()
    path.write_bytes(good)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


BAD = b"\x00\x01\x02\x03binary-looking bytes\x00\x00\x00\x00"
GOOD = b"# Fixed\n\nnow it is text about argon ."[:len(BAD)]


def test_a_failed_file_is_retried_by_the_next_rescan_after_its_fix(service) -> None:
    assert len(BAD) == len(GOOD)
    path = service.folder() / "fixme.md"
    path.write_bytes(BAD)
    service.kb.sync()
    assert service.kb.store.manifest.document("fixme.md").status == "failed"
    break_in_place(path, BAD, GOOD)
    service.kb.sync()  # a full rescan (as at start and every sources.rescan_seconds)
    assert service.kb.store.manifest.document("fixme.md").status == "indexed"


def test_a_failed_file_is_retried_on_a_watcher_event_for_it(client, service) -> None:
    path = service.folder() / "fixme.md"
    path.write_bytes(BAD)
    service.kb.sync()
    assert service.kb.store.manifest.document("fixme.md").status == "failed"
    with watching(service):
        time.sleep(0.5)
        break_in_place(path, BAD, GOOD)  # a write + utime: events, same stamp
        wait_for(indexed(client, "fixme.md"), timeout=15)
        path.write_bytes(BAD)
        wait_for(lambda: statuses(client).get("fixme.md") == "failed", timeout=15)
        st = path.stat()
        path.write_bytes(GOOD)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(path, 0o600)  # an attribute change alone, after the fix, is enough too
        wait_for(indexed(client, "fixme.md"), timeout=15)
