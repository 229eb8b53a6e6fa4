"""`footnotes status` reads the files: its counts equal the open indexes' own counts, and it imports
neither torch nor chromadb (knowledge/status.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from knowledge.status import npy_shape, read_status, saved_bm25_count
from knowledge.store import embedding_signature
from tests.conftest import small_config
from tests.fakes import HashingEmbedder
from tests.test_cli_startup import built  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent
SIGNATURE = embedding_signature(HashingEmbedder().name)


def test_counts_equal_the_open_indexes_after_adds_edits_and_deletes(open_kb, folder, tmp_path):
    for i in range(6):
        (folder / f"n{i}.md").write_text(f"# Note {i}\n\n" + f"Paragraph {i} about lighthouses and otters. " * 30)
    kb = open_kb()
    kb.sync()
    (folder / "n0.md").unlink()
    (folder / "n1.md").write_text("# Note 1\n\nShort now.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not a pdf")
    kb.sync()
    status = read_status(kb.config, kb.data_dir, SIGNATURE)
    assert status.chunks_chroma == kb.store.dense.count() == kb.store.manifest.chunk_count()
    assert status.chunks_bm25 == len(kb.store.bm25) == status.chunks_manifest
    assert status.documents == 5 and [f.doc_id for f in status.failed] == ["broken.pdf"]
    assert status.to_json() == kb.store.status().to_json()


def test_another_embedding_model_is_the_readers_error(open_kb, folder):
    (folder / "a.md").write_text("Lighthouses.\n")
    kb = open_kb()
    kb.sync()
    with pytest.raises(Exception, match="were built with hashing"):
        read_status(kb.config, kb.data_dir, embedding_signature("other-model@int8"))


def test_a_missing_bm25_file_counts_zero_and_a_broken_one_says_so(tmp_path):
    assert saved_bm25_count(tmp_path / "none.npz") == (0, ())
    (tmp_path / "bad.npz").write_bytes(os.urandom(300))
    count, warnings = saved_bm25_count(tmp_path / "bad.npz")
    assert count == 0 and "unreadable" in warnings[0]


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_shape_reads_numpys_own_headers(version):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(17, dtype=np.int64), version=version)
    buf.seek(0)
    assert npy_shape(buf) == (17,)


BLOCKED = """
import sys
HEAVY = {"torch", "transformers", "sentence_transformers", "chromadb"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is made unimportable by the test")
sys.meta_path.insert(0, Blocker())
from ui.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_status_opens_no_chroma_client(built):
    data, config = built
    if small_config().index.chroma != "embedded":
        pytest.skip("a `chroma run` server is counted through chromadb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOOTNOTES_")}
    proc = subprocess.run([sys.executable, "-c", BLOCKED, "--config", str(config), "--data-dir", str(data),
                           "status", "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["documents"] == 4 and status["chunks"] == {"manifest": 4, "chroma": 4, "bm25": 4}
