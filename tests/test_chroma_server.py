"""The dense index on a real `chroma run` server: knowledge bases sharing it, reindex, and the server
going away mid-query or mid-sync and coming back (same port, same data) while Footnotes keeps running."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import chromadb
import pytest

from knowledge.config import IndexConfig
from knowledge.dense import collection_name
from knowledge.errors import IndexUnusableError
from knowledge.kb import KnowledgeBase
from knowledge.reindex import wipe_indexes
from scripts.chroma_server import ChromaServer
from tests.conftest import CHROMA_SERVER, assert_consistent, small_config
from tests.fakes import HashingEmbedder

pytestmark = pytest.mark.slow  # real `chroma run` servers: `make test`, not `make check`

ROOT = Path(__file__).resolve().parent.parent

DOCS = {
    "curie.md": "# Marie Curie\n\nMarie Curie was born in Warsaw and studied radioactivity in Paris.\n",
    "tea.md": "# Tea\n\nGreen tea is steamed or pan-fired soon after picking, so it stays green.\n",
    "ada.md": "# Ada Lovelace\n\nAda Lovelace wrote the first program, for the Analytical Engine.\n",
}


@pytest.fixture
def server(tmp_path):
    with ChromaServer(tmp_path / "chroma-server") as srv:
        yield srv


@pytest.fixture
def config(server):
    index = IndexConfig(chroma="http", chroma_host=server.host, chroma_port=server.port)
    return dataclasses.replace(small_config(), index=index)


def write(folder: Path, docs: dict[str, str]) -> None:
    for name, text in docs.items():
        (folder / name).write_text(text)


def sources(hits) -> list[str]:
    return [h.chunk.doc_id for h in hits]


def assert_names_the_server(exc: IndexUnusableError, server: ChromaServer) -> None:
    message = str(exc)
    assert f"Chroma server at {server.url}" in message and "chroma run" in message, message
    assert "\n" not in message and "Traceback" not in message and "reindex" not in message


def test_search_while_the_server_is_down_is_a_clear_error_then_recovers(server, config, folder, open_kb):
    write(folder, DOCS)
    kb = open_kb(config)
    kb.sync()
    before = kb.retriever.search("Where was Marie Curie born?", 3)
    assert sources(before)[0] == "curie.md"

    server.kill()
    with pytest.raises(IndexUnusableError) as down:
        kb.retriever.search("Where was Marie Curie born?", 3)
    assert_names_the_server(down.value, server)
    with pytest.raises(IndexUnusableError):
        kb.store.status()

    server.start()  # same port, same data: the client reconnects by itself
    after = kb.retriever.search("Where was Marie Curie born?", 3)
    assert [(h.chunk.chunk_id, h.dense_score) for h in after] == [(h.chunk.chunk_id, h.dense_score) for h in before]
    assert_consistent(kb)


def test_sync_while_the_server_is_down_loses_nothing(server, config, folder, open_kb):
    write(folder, DOCS)
    kb = open_kb(config)
    kb.sync()
    chunks_before = kb.store.manifest.all_chunk_ids()

    server.kill()
    write(folder, {"coffee.md": "# Coffee\n\nEspresso needs finely ground beans and hot water under pressure.\n",
                   "tea.md": "# Tea\n\nOolong tea is partly oxidised, between green and black tea.\n"})
    with pytest.raises(IndexUnusableError) as down:
        kb.sync()
    assert_names_the_server(down.value, server)
    assert kb.store.manifest.all_chunk_ids() == chunks_before  # nothing recorded that the index lacks
    assert sources(kb.retriever.search_bm25("Marie Curie Warsaw", 1)) == ["curie.md"]  # BM25 still serves

    server.start()
    (report,) = kb.sync()
    assert sorted(report.added) == ["coffee.md"] and sorted(report.updated) == ["tea.md"]
    assert_consistent(kb)
    assert sources(kb.retriever.search("espresso beans", 1)) == ["coffee.md"]
    assert sources(kb.retriever.search("oolong oxidised", 1)) == ["tea.md"]
    assert "green tea is steamed" not in " ".join(h.chunk.text.lower() for h in kb.retriever.search("steamed", 5))


def test_a_delete_while_the_server_is_down_never_serves_the_deleted_text(server, config, folder, open_kb):
    write(folder, DOCS)
    kb = open_kb(config)
    kb.sync()

    server.kill()
    (folder / "ada.md").unlink()
    with pytest.raises(IndexUnusableError):
        kb.sync()
    assert "ada.md" not in sources(kb.retriever.search_bm25("Ada Lovelace Analytical Engine", 5))

    server.start()
    kb.sync()
    assert "ada.md" not in sources(kb.retriever.search("Ada Lovelace Analytical Engine", 5))
    assert_consistent(kb)  # the next sync reconciled what the failed one left


def test_a_server_that_lost_its_data_is_a_clear_error_and_reopening_refills_it(server, config, folder, open_kb):
    write(folder, DOCS)
    kb = open_kb(config)
    kb.sync()
    server.stop()
    blank = ChromaServer(server.path.parent / "blank", server.port).start()  # same port, empty data
    try:
        with pytest.raises(IndexUnusableError, match="is gone from the Chroma server .* restart Footnotes"):
            kb.retriever.search("Where was Marie Curie born?", 3)
        kb.close()
        kb = open_kb(config)
        assert_consistent(kb)
        assert kb.store.dense.count() == kb.store.manifest.chunk_count() > 0
        assert sources(kb.retriever.search_dense("Where was Marie Curie born?", 1)) == ["curie.md"]
    finally:
        blank.stop()


def test_open_while_the_server_is_down_is_a_clear_error(server, config, folder, tmp_path):
    server.stop()
    with pytest.raises(IndexUnusableError) as down:
        KnowledgeBase.open(config, tmp_path / "data", folder=folder, embedder=HashingEmbedder())
    assert_names_the_server(down.value, server)


def test_knowledge_bases_sharing_a_server_see_only_their_own_chunks(server, config, tmp_path):
    kbs = []
    for name, docs in (("one", {"curie.md": DOCS["curie.md"]}), ("two", {"tea.md": DOCS["tea.md"]})):
        (tmp_path / name).mkdir()
        write(tmp_path / name, docs)
        kb = KnowledgeBase.open(config, tmp_path / f"data-{name}", folder=tmp_path / name, embedder=HashingEmbedder())
        kb.sync()
        kbs.append(kb)
    try:
        one, two = kbs
        assert one.store.dense.name != two.store.dense.name
        assert sources(one.retriever.search_dense("green tea picking", 5)) == ["curie.md"]
        assert sources(two.retriever.search_dense("Marie Curie Warsaw", 5)) == ["tea.md"]
        for kb in kbs:
            assert_consistent(kb)
        name = one.store.dense.name
        one.close()
        assert collection_name(config.index, tmp_path / "data-one") == name  # the data dir keeps its collection
    finally:
        for kb in kbs:
            kb.close()


def test_reindex_resets_the_servers_collection(server, config, folder, open_kb, tmp_path):
    write(folder, DOCS)
    kb = open_kb(config)
    kb.sync()
    assert kb.store.dense.count() > 0
    kb.close()

    assert wipe_indexes(tmp_path / "data", config) == str(folder.resolve())
    kb = open_kb(config)
    assert kb.store.dense.count() == 0 and kb.store.manifest.chunk_count() == 0
    kb.sync()
    assert_consistent(kb)
    assert sources(kb.retriever.search("Marie Curie Warsaw", 1)) == ["curie.md"]


def test_the_script_runs_a_command_against_a_server_and_stops_it(tmp_path):
    probe = ("import os, urllib.request as u; url = os.environ['FOOTNOTES_TEST_CHROMA']; "
             "o = u.build_opener(u.ProxyHandler({})); print(url, o.open(url + '/api/v2/heartbeat').status); "
             "raise SystemExit(3)")
    proc = subprocess.run([sys.executable, "scripts/chroma_server.py", "run", "--path", str(tmp_path / "db"), "--",
                           sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 3, proc.stderr  # the command's exit code
    url, status = proc.stdout.splitlines()[-1].split()
    assert url.startswith("http://127.0.0.1:") and status == "200"
    assert not ChromaServer(tmp_path / "db", int(url.rsplit(":", 1)[1])).answers()  # stopped afterwards


@pytest.mark.skipif(not CHROMA_SERVER, reason="only when FOOTNOTES_TEST_CHROMA names a server (make test-chroma-server)")
def test_the_fixtures_keep_their_vectors_on_the_named_server(folder, open_kb):
    write(folder, DOCS)
    kb = open_kb()
    kb.sync()
    probe = ChromaServer(folder, kb.config.index.chroma_port, kb.config.index.chroma_host)
    assert kb.config.index.chroma == "http" and probe.url == CHROMA_SERVER and probe.answers()
    client = chromadb.HttpClient(host=probe.host, port=probe.port)
    assert client.get_collection(kb.store.dense.name).count() == kb.store.manifest.chunk_count() > 0
