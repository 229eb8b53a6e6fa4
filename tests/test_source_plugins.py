"""Sources that plug in: each kind reads its own [sources.<kind>] table, a second writable source gets
uploads and deletes through the same Service calls the page makes, old flat config files still work
(with a warning naming each move), and derived data is wiped through its registry."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.derived import held_derived
from knowledge.errors import ConfigError, DocumentNotFound
from knowledge.kb import KnowledgeBase, open_sources
from knowledge.reindex import wipe_indexes
from knowledge.sources.folder import FolderSettings, FolderSource
from knowledge.sources.web import WebSettings, WebSource
from tests.conftest import small_config
from tests.fakes import HashingEmbedder
from ui.settings import load_config

ROOT = Path(__file__).resolve().parent.parent

INBOX = '''
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import DocumentError, DocumentNotFound
from knowledge.sources.base import WritableSource
from knowledge.types import DocumentRef, RawDocument
from knowledge.uploads import save_upload


@dataclass(frozen=True)
class InboxSettings:
    drop: str = ""  # the inbox folder
    poll_seconds: float = 0.2  # how often the inbox is listed while watching


class InboxSource(WritableSource):
    """A flat folder of files under ids "inbox:<name>": a second writable source."""

    kind = "inbox"
    Settings = InboxSettings
    lists_locally = True

    def __init__(self, drop, poll_seconds):
        self.drop, self.poll_seconds = Path(drop), poll_seconds
        self.deleted = []

    @classmethod
    def from_config(cls, config, data_dir, folder):
        settings = config.settings_for(cls)
        return cls(settings.drop, settings.poll_seconds) if settings.drop else None

    def documents(self):
        for p in sorted(self.drop.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                yield DocumentRef("inbox:" + p.name, str(p.stat().st_mtime_ns))

    def fetch(self, doc_id):
        path = self.drop / doc_id.removeprefix("inbox:")
        try:
            return RawDocument(doc_id, path.read_bytes(), path.suffix)
        except OSError:
            raise DocumentError(f"{doc_id} is gone") from None

    def location(self, doc_id):
        return str(self.drop / doc_id.removeprefix("inbox:"))

    def watch(self, on_change, stop, interval=None):
        super().watch(on_change, stop, self.poll_seconds if interval is None else interval)

    def save(self, name, data, max_bytes):
        return save_upload(self.drop, name, data, max_bytes)

    def delete(self, doc_id, listed):
        path = self.drop / doc_id.removeprefix("inbox:")
        if not doc_id.startswith("inbox:") or not path.is_file():
            raise DocumentNotFound(f"{doc_id} is not in the inbox")
        path.unlink()
        self.deleted.append(doc_id)


class Scratch:
    """Derived data of a plugin: a scratch folder, registered under footnotes.derived."""

    name = "scratch"

    def exists(self, data_dir):
        return (Path(data_dir) / "scratch").is_dir()

    def wipe(self, data_dir):
        import shutil

        shutil.rmtree(Path(data_dir) / "scratch", ignore_errors=True)


SCRATCH = Scratch()
'''


@pytest.fixture
def inbox_plugin(tmp_path, monkeypatch):
    """A third-party writable source and a derived-data cleaner, installed the way pip would."""
    site = tmp_path / "site"
    info = site / "inbox_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "inbox_footnotes.py").write_text(INBOX)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: inbox-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[footnotes.sources]\ninbox = inbox_footnotes:InboxSource\n\n"
                                           "[footnotes.derived]\nscratch = inbox_footnotes:SCRATCH\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "footnotes.toml"
    path.write_text(text)
    return path


# -- each kind reads its own table -------------------------------------------------------------------
def test_each_kind_reads_its_own_table(tmp_path):
    cfg = load_config(write_config(tmp_path, f"""
[sources]
kinds = ["folder", "web"]
[sources.folder]
path = "{tmp_path}"
ignore = ["drafts/*"]
debounce_seconds = 0.1
[sources.web]
urls = ["https://example.org/a"]
refresh_seconds = 60
"""))
    sources = cfg.knowledge.sources
    assert sources.settings_for(FolderSource) == FolderSettings(str(tmp_path), ("drafts/*",), 0.1)
    assert sources.settings_for(WebSource) == WebSettings(("https://example.org/a",), 60.0)
    folder = FolderSource.from_config(sources, tmp_path / "data", None)
    assert folder.root == tmp_path.resolve() and folder.debounce_seconds == 0.1 and folder.ignore == ("drafts/*",)


def test_defaults_are_the_kinds_own(tmp_path):
    sources = KnowledgeConfig().sources
    assert sources.settings_for(FolderSource) == FolderSettings() and sources.tables == ()
    assert sources.settings_for(WebSource) == WebSettings()


@pytest.mark.parametrize(("text", "message"), [
    ("[sources.folder]\ndebounce = 1\n", "unknown key 'sources.folder.debounce'"),
    ("[sources.web]\nurls = \"https://a\"\n", "'sources.web.urls' must be a list"),
    ("[sources.ftp]\nhost = \"x\"\n", "[sources.ftp] names no source kind; registered source kinds: folder, web"),
    ("[sources]\nurls = []\n[sources.web]\nurls = []\n", "'sources.urls' has moved to 'urls' in [sources.web], which sets it too"),
    ("[watcher]\ndebounce_seconds = 1\nquiet = 2\n", "unknown key 'watcher.quiet'"),
])
def test_a_bad_source_table_is_one_error_naming_key_and_file(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_plugins_table_is_parsed_by_its_own_settings(inbox_plugin, tmp_path):
    cfg = load_config(write_config(tmp_path, f'[sources]\nkinds = ["inbox"]\n[sources.inbox]\ndrop = "{tmp_path}"\n'))
    (source,) = open_sources(cfg.knowledge, tmp_path / "data")
    assert source.kind == "inbox" and source.drop == tmp_path and source.poll_seconds == 0.2
    with pytest.raises(ConfigError, match="unknown key 'sources.inbox.dorp'"):
        load_config(write_config(tmp_path, '[sources.inbox]\ndorp = "x"\n'))


# -- old flat files ------------------------------------------------------------------------------------
OLD = """
[sources]
kinds = ["folder", "web"]
folder = "{folder}"
urls = ["https://example.org/a"]
web_refresh_seconds = 120
web_timeout_seconds = 5
ignore = ["*.bak"]
rescan_seconds = 30
[watcher]
debounce_seconds = 0.25
"""


def test_an_old_flat_file_keeps_working_and_says_where_each_key_moved(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="knowledge.config"):
        cfg = load_config(write_config(tmp_path, OLD.format(folder=tmp_path)))
    sources = cfg.knowledge.sources
    assert sources.settings_for(FolderSource) == FolderSettings(str(tmp_path), ("*.bak",), 0.25, 30.0)
    assert sources.settings_for(WebSource) == WebSettings(("https://example.org/a",), 120.0, 5.0)
    moves = sorted(r.getMessage().split(": ", 1)[1] for r in caplog.records)
    assert len(moves) == 7 and all(m.count("\n") == 0 for m in moves)
    assert "'watcher.debounce_seconds' has moved to 'debounce_seconds' in [sources.folder]" in moves[-1]
    assert any("'sources.urls' has moved to 'urls' in [sources.web]" in m for m in moves)


# -- a second writable source, through the Service the page calls ----------------------------------------
def inbox_service(tmp_path: Path, kinds: tuple[str, ...]):
    from assistant.config import AnswerConfig
    from tests.tinylm import make_generator
    from ui.service import Service

    drop, folder = tmp_path / "drop", tmp_path / "knowledge"
    drop.mkdir()
    folder.mkdir()
    (folder / "seed.md").write_text("# Seed\n\nlighthouses guide ships .\n")
    cfg = load_config(write_config(tmp_path, f'[sources.inbox]\ndrop = "{drop}"\n'))
    knowledge = dataclasses.replace(small_config(), sources=dataclasses.replace(cfg.knowledge.sources, kinds=kinds))
    kb = KnowledgeBase.open(knowledge, tmp_path / "data", folder=folder, embedder=HashingEmbedder())
    kb.sync()
    return Service(kb, make_generator(), AnswerConfig(k=2, max_new_tokens=4), 10_000), drop, folder


def test_a_second_writable_source_gets_uploads_and_deletes_without_ui_changes(inbox_plugin, tmp_path):
    service, drop, folder = inbox_service(tmp_path, ("inbox", "folder"))
    try:
        saved = service.upload("otters.md", b"# Otters\n\notters hold hands while they sleep .\n")
        assert saved.path == drop / "otters.md" and not (folder / "otters.md").exists()
        assert service.folder() == drop  # uploads go to the first writable source of sources.kinds
        listed = {d.doc_id: d for d in service.documents()}
        assert listed["inbox:otters.md"].status == "pending" and listed["inbox:otters.md"].kind == "inbox"
        assert listed["inbox:otters.md"].deletable and listed["seed.md"].deletable  # both sources are writable
        service.kb.sync()
        assert service.search("otters sleep", 1)[0].chunk.doc_id == "inbox:otters.md"

        report = service.delete("inbox:otters.md")
        assert report.removed == ("inbox:otters.md",) and not (drop / "otters.md").exists()
        assert service.kb.source("inbox").deleted == ["inbox:otters.md"]
        assert service.kb.store.manifest.document("inbox:otters.md") is None
        with pytest.raises(DocumentNotFound):
            service.delete("inbox:nothing.md")

        report = service.delete("seed.md")  # the folder's own document still goes through the folder
        assert report.removed == ("seed.md",) and not (folder / "seed.md").exists()
    finally:
        service.kb.close()


def test_the_inbox_is_watched_on_its_own_clock(inbox_plugin, tmp_path):
    import threading

    service, drop, _ = inbox_service(tmp_path, ("inbox",))
    stop, reports = threading.Event(), []
    threads = service.kb.watch(stop, on_report=reports.append)
    try:
        time.sleep(0.5)  # the polling default takes its first listing when it starts
        (drop / "kettle.md").write_text("# Kettle\n\nthe kettle whistles .\n")
        deadline = time.monotonic() + 10
        while not any("inbox:kettle.md" in r.added for r in reports) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("inbox:kettle.md" in r.added for r in reports)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        service.kb.close()


# -- derived data ------------------------------------------------------------------------------------------
def test_reindex_wipes_what_is_registered_as_derived(inbox_plugin, open_kb, folder, tmp_path):
    (folder / "a.md").write_text("Lighthouses guide ships.\n")
    kb = open_kb()
    kb.sync()
    kb.close()
    data = tmp_path / "data"
    (data / "knn").mkdir()
    (data / "knn" / "meta.json").write_text("{}")
    (data / "scratch").mkdir()
    assert held_derived(data) == ("knn-lm", "scratch")
    assert wipe_indexes(data, small_config(), keep_meta={"folder_root": str(folder)}) == str(folder.resolve())
    assert held_derived(data) == () and not (data / "knn").exists() and not (data / "scratch").exists()
    (source,) = open_sources(small_config(), data)  # the folder is remembered across the wipe
    assert source.root == folder.resolve()


# -- nothing outside a source knows a kind ----------------------------------------------------------------
def test_no_code_outside_the_sources_names_a_source_kind():
    pattern = re.compile(r"""source\(\s*["'](folder|web)["']|kind\s*==\s*["'](folder|web)["']|== ["']folder["']""")
    offenders = []
    for path in [*ROOT.glob("knowledge/**/*.py"), *ROOT.glob("ui/**/*.py"), *ROOT.glob("assistant/**/*.py")]:
        if "sources" in path.relative_to(ROOT).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
