"""Sources load through entry points like plugins; the config is strict and names what is wrong."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from assistant.config import ModeTables
from assistant.engine import mode_class, mode_names
from assistant.modes.base import own_settings
from knowledge.config import KnowledgeConfig
from knowledge.errors import ConfigError, UnknownNameError
from knowledge.kb import KnowledgeBase
from knowledge.registry import SOURCES_GROUP, load_plugin, registered_names
from tests.fakes import HashingEmbedder
from ui.settings import FootnotesConfig, load_config

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
from knowledge.sources.base import Source
from knowledge.types import DocumentRef, RawDocument

NOTES = {"memo/1": b"The memo says the launch is on Tuesday.", "memo/2": b"Budget approved for rockets."}


class MemoSource(Source):
    kind = "memo"

    @classmethod
    def from_config(cls, config, data_dir, folder):
        return cls()

    def documents(self):
        return iter([DocumentRef(k, str(len(v))) for k, v in NOTES.items()])

    def fetch(self, doc_id):
        return RawDocument(doc_id, NOTES[doc_id], ".txt")
'''


@pytest.fixture
def memo_plugin(tmp_path, monkeypatch):
    """Install a third-party source the way pip would: a module plus a dist-info with entry points."""
    site = tmp_path / "site"
    (site / "memo_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "memo_footnotes.py").write_text(PLUGIN)
    (site / "memo_plugin-1.0.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: memo-plugin\nVersion: 1.0\n")
    (site / "memo_plugin-1.0.dist-info/entry_points.txt").write_text(
        "[footnotes.sources]\nmemo = memo_footnotes:MemoSource\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_are_registered_as_entry_points():
    assert {"folder", "web"} <= set(registered_names(SOURCES_GROUP))


def test_third_party_source_is_found_and_indexed(memo_plugin, tmp_path):
    assert "memo" in registered_names(SOURCES_GROUP)
    config = dataclasses.replace(KnowledgeConfig(), sources=dataclasses.replace(KnowledgeConfig().sources, kinds=("memo",)))
    kb = KnowledgeBase.open(config, tmp_path / "data", embedder=HashingEmbedder())
    try:
        (report,) = kb.sync()
        assert sorted(report.added) == ["memo/1", "memo/2"]
        assert kb.retriever.search("launch tuesday", 1)[0].doc_id == "memo/1"
    finally:
        kb.close()


def test_unknown_source_lists_registered_ones():
    with pytest.raises(UnknownNameError) as err:
        load_plugin(SOURCES_GROUP, "ftp", "source")
    assert "folder" in str(err.value) and "web" in str(err.value) and "ftp" in str(err.value)


def test_shipped_config_toml_equals_the_defaults():
    shipped = load_config(ROOT / "config.toml")
    answer = shipped.assistant.answer
    assert set(answer.modes.tables) == set(mode_names())  # every registered mode's table, each at its defaults
    for name in mode_names():
        assert own_settings(mode_class(name), answer) == mode_class(name).Settings()
    without_tables = dataclasses.replace(answer, modes=ModeTables())
    shipped = dataclasses.replace(shipped, assistant=dataclasses.replace(shipped.assistant, answer=without_tables))
    assert shipped == dataclasses.replace(FootnotesConfig(), file=str(ROOT / "config.toml"))


def test_config_toml_is_up_to_date_with_every_setting():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "scripts/write_config.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout == (ROOT / "config.toml").read_text(), "run: python scripts/write_config.py > config.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[retrieval]\nkk = 3\n", "unknown key 'retrieval.kk'"),
        ("[nonsense]\na = 1\n", "unknown section or key 'nonsense'"),
        ("[retrieval]\nk = \"five\"\n", "'retrieval.k' must be int"),
        ("[chunking]\nsize_tokens = 8\n", "size_tokens"),
        ("[retrieval\n", "not valid TOML"),
        ("[index]\nchroma = \"cloud\"\n", "index.chroma"),
    ],
)
def test_malformed_config_is_rejected_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def web_urls(cfg) -> tuple[str, ...]:
    from knowledge.sources.web import WebSource

    return cfg.knowledge.sources.settings_for(WebSource).urls


def test_partial_config_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent("""
        [retrieval]
        k = 9
        [sources]
        urls = ["http://127.0.0.1:1/x"]
    """))
    cfg = load_config(path)
    assert cfg.knowledge.retrieval.k == 9 and web_urls(cfg) == ("http://127.0.0.1:1/x",)
    assert cfg.knowledge.chunking == KnowledgeConfig().chunking
