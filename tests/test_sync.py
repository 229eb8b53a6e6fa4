"""The folder is kept exactly in step with the manifest, Chroma and BM25."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from knowledge.embedding import text_hash
from knowledge.sync import Syncer
from knowledge.types import Reconciled
from tests.conftest import assert_consistent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def texts_of(kb, doc_id: str) -> str:
    return " ".join(c.text for c in kb.store.manifest.document_chunks(doc_id))


def test_ingest_then_search_finds_the_document(folder, open_kb):
    write(folder / "a.md", "# Alpha\n\nThe zebra crossing is painted white.\n")
    write(folder / "notes/b.txt", "Bananas are yellow fruit.\n")
    kb = open_kb()
    (report,) = kb.sync()
    assert sorted(report.added) == ["a.md", "notes/b.txt"]
    hits = kb.retriever.search("zebra crossing", 1)
    assert hits[0].doc_id == "a.md"
    assert hits[0].bm25_score > 0 and hits[0].dense_score > 0  # both retrievers found it
    chunk = hits[0].chunk
    assert (folder / "a.md").read_text()[chunk.start:chunk.end] == chunk.text
    assert_consistent(kb)


def test_sync_is_idempotent(folder, open_kb):
    for i in range(5):
        write(folder / f"d{i}.md", f"# Doc {i}\n\nword{i} " * 30)
    kb = open_kb()
    kb.sync()
    before = kb.store.manifest.all_chunk_ids()
    (again,) = kb.sync()
    assert not again.changed and again.unchanged == 5 and again.chunks_embedded == 0
    assert kb.store.manifest.all_chunk_ids() == before
    assert_consistent(kb)


def test_edit_replaces_stale_text_and_reuses_unchanged_chunks(folder, open_kb):
    body = "\n\n".join(f"Paragraph {i} talks about topic{i} in some detail here." for i in range(12))
    path = write(folder / "doc.md", "# Title\n\n" + body + "\n")
    kb = open_kb()
    kb.sync()
    n_before = len(kb.store.manifest.document_chunks("doc.md"))
    path.write_text(path.read_text().replace("topic11", "platypus"))
    os.utime(path, ns=(1, 1))  # a new stamp even within the same mtime tick
    (report,) = kb.sync()
    assert report.updated == ("doc.md",)
    assert report.chunks_embedded == 1 and report.chunks_reused == n_before - 1  # only the edited chunk
    assert "platypus" in texts_of(kb, "doc.md") and "topic11" not in texts_of(kb, "doc.md")
    assert kb.retriever.search_bm25("topic11", 5) == []
    assert kb.retriever.search("platypus", 1)[0].doc_id == "doc.md"
    assert_consistent(kb)


def test_delete_and_rename(folder, open_kb):
    a = write(folder / "a.md", "# Marsupials\n\nKangaroos hop across the outback.\n")
    write(folder / "b.md", "Penguins swim in cold water.\n")
    kb = open_kb()
    kb.sync()
    a.rename(folder / "renamed.md")
    (folder / "b.md").unlink()
    (report,) = kb.sync()
    assert report.added == ("renamed.md",) and set(report.removed) == {"a.md", "b.md"}
    assert report.chunks_embedded == 0  # the renamed text (same heading path) was embedded before
    assert [h.doc_id for h in kb.retriever.search("kangaroos outback", 5)] == ["renamed.md"]
    assert "b.md" not in {h.doc_id for h in kb.retriever.search("penguins", 5)}
    assert_consistent(kb)


def test_restart_reconciles_changes_made_while_stopped(folder, open_kb, tmp_path):
    write(folder / "a.md", "Old content about owls.\n")
    kb = open_kb()
    kb.sync()
    kb.close()
    write(folder / "a.md", "New content about ravens and crows.\n")
    write(folder / "c.md", "Cats sleep a lot.\n")
    kb2 = open_kb()
    (report,) = kb2.sync()
    assert report.updated == ("a.md",) and report.added == ("c.md",)
    assert kb2.retriever.search_bm25("owls", 5) == []
    assert_consistent(kb2)


def test_hidden_swap_and_unsupported_files_are_ignored(folder, open_kb):
    write(folder / "keep.md", "Visible text.\n")
    for name in [".hidden.md", ".git/config.md", "keep.md.swp", "keep.md~", ".#keep.md", "image.png", "x.tmp"]:
        write(folder / name, "secret words\n")
    kb = open_kb()
    kb.sync()
    assert [d.doc_id for d in kb.store.manifest.documents()] == ["keep.md"]


def test_symlink_loop_and_escape_are_safe(folder, open_kb, tmp_path):
    write(folder / "sub/a.md", "Inside the folder.\n")
    (folder / "sub/loop").symlink_to(folder, target_is_directory=True)
    outside = write(tmp_path / "outside/secret.md", "Outside secret.\n")
    (folder / "escape.md").symlink_to(outside)
    (folder / "escape-dir").symlink_to(outside.parent, target_is_directory=True)
    kb = open_kb()
    kb.sync()
    assert [d.doc_id for d in kb.store.manifest.documents()] == ["sub/a.md"]


def test_bad_files_are_recorded_and_do_not_stop_others(folder, open_kb):
    write(folder / "good.md", "Good text about rivers.\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 50)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "locked.md").write_text("no access")
    os.chmod(folder / "locked.md", 0)
    big = folder / "big.txt"
    big.write_text("word " * 3000)

    from tests.conftest import small_config

    kb = open_kb(small_config(max_file_bytes=10_000))
    (report,) = kb.sync()
    os.chmod(folder / "locked.md", 0o644)
    failed = {f.doc_id: f.error for f in report.failed}
    root = os.geteuid() == 0  # root reads a file whatever its mode bits say
    assert set(failed) == {"empty.txt", "binary.txt", "broken.pdf", "big.txt"} | (set() if root else {"locked.md"})
    assert "max_file_bytes" in failed["big.txt"]
    assert report.added == (("good.md", "locked.md") if root else ("good.md",))
    status = kb.store.status().to_json()
    assert {f["source"] for f in status["failed"]} == set(failed)
    assert status["documents"] == len(report.added)
    assert status["chunks"]["manifest"] == status["chunks"]["chroma"] == status["chunks"]["bm25"] > 0
    # fixing a file clears its failure
    (folder / "empty.txt").write_text("Now it has words.\n")
    kb.sync()
    assert "empty.txt" not in {f.doc_id for f in kb.store.manifest.failures()}
    assert_consistent(kb)


def test_vanishing_file_is_a_recorded_failure_not_a_crash(folder, open_kb):
    write(folder / "a.md", "Stays.\n")
    gone = write(folder / "gone.md", "Vanishes.\n")
    kb = open_kb()
    source = kb.source("folder")
    refs = list(source.documents())
    gone.unlink()

    class Listing:
        """The folder as it was listed a moment before the file vanished."""

        kind = "folder"

        def documents(self):
            return iter(refs)

        def fetch(self, doc_id):
            return source.fetch(doc_id)

    report = Syncer(kb.store, Listing(), "folder").sync()
    assert [f.doc_id for f in report.failed] == ["gone.md"]
    assert "vanished" in report.failed[0].error
    assert report.added == ("a.md",)


def test_filters_by_prefix_and_type(folder, open_kb):
    write(folder / "docs/guide.md", "Install the widget carefully.\n")
    write(folder / "notes/widget.txt", "Widget notes.\n")
    kb = open_kb()
    kb.sync()
    from knowledge.retrieval import Filters

    assert {h.doc_id for h in kb.retriever.search("widget", 5, Filters(prefix="docs/"))} == {"docs/guide.md"}
    assert {h.doc_id for h in kb.retriever.search("widget", 5, Filters(suffixes=(".txt",)))} == {"notes/widget.txt"}


def test_reconcile_repairs_orphans_and_gaps(folder, open_kb):
    write(folder / "a.md", "Apples and pears.\n")
    kb = open_kb()
    kb.sync()
    store = kb.store
    some = sorted(store.manifest.all_chunk_ids())[0]
    store.bm25.remove(some)
    store.dense.delete([some])
    store.dense.upsert(["orphan"], np.ones((1, store.embedder.dim), dtype=np.float32) / 8, ["zz.md"])
    store.bm25.add("orphan", "orphan text")
    fixed = store.reconcile()
    assert fixed == Reconciled(bm25_added=1, bm25_removed=1, dense_added=1, dense_removed=1)
    assert_consistent(kb)


def test_second_writer_is_refused_but_readers_are_welcome(folder, open_kb, tmp_path):
    import pytest

    from knowledge.errors import IndexUnusableError
    from knowledge.kb import KnowledgeBase
    from tests.conftest import small_config
    from tests.fakes import HashingEmbedder

    write(folder / "a.md", "Readers can search while a writer holds the data dir.\n")
    kb = open_kb()
    kb.sync()
    with pytest.raises(IndexUnusableError, match="being written by pid"):
        open_kb()
    reader = KnowledgeBase.open(small_config(), tmp_path / "data", embedder=HashingEmbedder(), write=False)
    assert reader.retriever.search("readers search", 1)[0].doc_id == "a.md"
    reader.close()
    kb.close()
    open_kb().close()  # free again once the writer closed


def test_heading_path_gives_a_section_its_subject(folder, open_kb):
    write(folder / "curie.md", "# Marie Curie\n\nA physicist.\n\n## Early life\n\nShe was born in Warsaw.\n")
    write(folder / "other.md", "# Cities\n\nWarsaw is a capital city.\n")
    kb = open_kb()
    kb.sync()
    top = kb.retriever.search_bm25("curie born", 1)[0]
    assert top.doc_id == "curie.md" and "Warsaw" in top.chunk.text


def test_a_hundred_edits_leave_one_cached_vector_per_live_chunk_text(folder, open_kb):
    path = write(folder / "doc.md", "# Notes\n\nA paragraph that never changes.\n\nDraft 0 of the changing one.\n")
    write(folder / "other.md", "# Other\n\nA text of its own.\n")
    kb = open_kb()
    kb.sync()
    for i in range(1, 101):
        path.write_text(f"# Notes\n\nA paragraph that never changes.\n\nDraft {i} of the changing one.\n")
        os.utime(path, ns=(i, i))
        kb.sync()
    live = {text_hash(c.index_text) for c in kb.store.manifest.chunks(kb.store.manifest.all_chunk_ids()).values()}
    cached = _cached_hashes(kb)
    assert cached == live and len(live) == kb.store.manifest.chunk_count()


def test_a_text_that_moves_to_another_document_keeps_its_cached_vector(folder, open_kb):
    text = "# Herons\n\nA paragraph about herons, under the same heading in both files.\n"
    write(folder / "a.md", text)
    kb = open_kb()
    kb.sync()
    (folder / "a.md").unlink()
    write(folder / "b.md", text)
    (report,) = kb.sync()  # a.md's chunks leave before b.md is embedded: the prune must wait for the whole sync
    assert report.chunks_embedded == 0
    assert _cached_hashes(kb) == {text_hash(c.index_text) for c in kb.store.manifest.document_chunks("b.md")}


def test_reconcile_prunes_what_an_older_version_left_in_the_cache(folder, open_kb, tmp_path):
    write(folder / "a.md", "Current text.\n")
    kb = open_kb()
    kb.sync()
    kb.store.manifest.cache_embeddings(kb.store.embedder.name, [("stale-hash", np.ones(kb.store.embedder.dim))])
    kb.close()
    kb = open_kb()  # a writer reconciles when it opens
    assert "stale-hash" not in _cached_hashes(kb) and len(_cached_hashes(kb)) == 1


def _cached_hashes(kb) -> set[str]:
    rows = kb.store.manifest._db.execute("SELECT text_hash FROM embedding_cache").fetchall()  # noqa: SLF001
    return {r[0] for r in rows}
