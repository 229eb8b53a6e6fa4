"""End to end through the `footnotes` command, on the real packaged embedding model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.real_models


def footnotes(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ui.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def corpus(tmp_path) -> Path:
    dest = tmp_path / "kb"
    shutil.copytree(ROOT / "sample", dest)
    return dest


def search(data: Path, query: str, k: int = 3) -> list[dict]:
    return json.loads(footnotes("--data-dir", str(data), "search", query, "--k", str(k), "--json").stdout)


def test_ingest_search_status_edit_delete(corpus, tmp_path):
    data = tmp_path / "data"
    footnotes("--data-dir", str(data), "ingest", str(corpus))
    hits = search(data, "Where was Marie Curie born?")
    assert hits[0]["source"] == "marie-curie.md"
    assert set(hits[0]) >= {"chunk_id", "source", "start", "end", "text", "score", "dense_score", "bm25_score"}
    text = (corpus / "marie-curie.md").read_text()
    assert any(text[h["start"]:h["end"]] == h["text"] and "Warsaw" in h["text"] for h in hits)

    status = json.loads(footnotes("--data-dir", str(data), "status", "--json").stdout)
    assert status["documents"] == 4 and status["failed"] == []
    assert status["chunks"]["manifest"] == status["chunks"]["chroma"] == status["chunks"]["bm25"] > 0
    assert status["last_sync"]

    (corpus / "tea.html").write_text("<h1>Coffee</h1><p>Espresso needs finely ground beans.</p>")
    (corpus / "ada-lovelace.md").unlink()
    (corpus / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    footnotes("--data-dir", str(data), "ingest", str(corpus))
    status = json.loads(footnotes("--data-dir", str(data), "status", "--json").stdout)
    assert status["documents"] == 3
    assert [f["source"] for f in status["failed"]] == ["broken.docx"]
    assert status["chunks"]["manifest"] == status["chunks"]["chroma"] == status["chunks"]["bm25"]
    sources = {h["source"] for h in search(data, "Bernoulli numbers Analytical Engine", 10)}
    assert "ada-lovelace.md" not in sources
    assert search(data, "espresso beans", 1)[0]["source"] == "tea.html"


def test_search_prints_no_warning_unless_verbose(corpus, tmp_path):
    data = tmp_path / "data"
    footnotes("--data-dir", str(data), "ingest", str(corpus))
    quiet = footnotes("--data-dir", str(data), "search", "green tea", "--json")
    assert quiet.stderr == ""  # the default backend (OpenVINO) says nothing either
    assert json.loads(quiet.stdout)
    # torch's int8 path raises torch's quantization deprecation, which is not the user's to act on
    torch_int8 = tmp_path / "torch-int8.toml"
    torch_int8.write_text('[embedding]\nbackend = "torch"\ndtype = "int8"\n')
    torch_data = tmp_path / "torch-data"
    footnotes("--config", str(torch_int8), "--data-dir", str(torch_data), "ingest", str(corpus))
    quiet = footnotes("--config", str(torch_int8), "--data-dir", str(torch_data), "search", "green tea", "--json")
    assert quiet.stderr == "" and json.loads(quiet.stdout)
    verbose = footnotes("-v", "--config", str(torch_int8), "--data-dir", str(torch_data), "search", "green tea", "--json")
    assert "quantize_per_channel" in verbose.stderr


def test_data_dir_and_config_from_environment(corpus, tmp_path):
    data = tmp_path / "envdata"
    cfg = tmp_path / "c.toml"
    cfg.write_text("[retrieval]\nk = 2\n")
    env = {"FOOTNOTES_DATA_DIR": str(data), "FOOTNOTES_CONFIG": str(cfg)}
    footnotes("ingest", str(corpus), env=env)
    assert (data / "manifest.sqlite3").exists()
    hits = json.loads(footnotes("search", "green tea", "--json", env=env).stdout)
    assert len(hits) == 2


def test_bad_config_is_one_clear_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[retrieval]\nkk = 3\n")
    proc = footnotes("--config", str(cfg), "status", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "retrieval.kk" in proc.stderr and str(cfg) in proc.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_watch_picks_up_new_files(corpus, tmp_path, stop_signal):
    data = tmp_path / "data"
    log = tmp_path / "watch.log"  # a file, not a pipe: nobody has to keep reading it for the child to go on
    with log.open("w") as err:
        # Ctrl-C must reach it even when the test run itself was started in the background (`make test &`):
        # a background job ignores SIGINT, and an ignored signal stays ignored across exec.
        proc = subprocess.Popen([sys.executable, "-m", "ui.cli", "--data-dir", str(data), "watch", str(corpus)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while "watching" not in log.read_text():
            assert proc.poll() is None, f"watch exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        (corpus / "otters.md").write_text("# Otters\n\nSea otters hold hands while they sleep.\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            hits = search(data, "sea otters hold hands", 3)
            if hits[0]["source"] == "otters.md":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the watcher did not index the new file:\n{log.read_text()}")
    finally:
        proc.send_signal(stop_signal)
        try:
            assert proc.wait(timeout=60) == 0, log.read_text()  # a clean stop: the indexes are closed
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"watch did not stop within 60 s of {stop_signal.name}:\n{log.read_text()}")
    assert proc.returncode == 0


def test_eval_retrieval_json(tmp_path):
    corpus = tmp_path / "c"
    shutil.copytree(ROOT / "sample", corpus)
    queries = tmp_path / "q.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"id": "1", "question": "Who discovered polonium?", "gold": ["marie-curie.md"], "answers": []},
        {"id": "2", "question": "What temperature for green tea?", "gold": ["tea.html"], "answers": []},
        {"id": "3", "question": "Who wrote the first program?", "gold": ["ada-lovelace.md"], "answers": []},
    ]) + "\n")
    out = json.loads(footnotes("--data-dir", str(tmp_path / "d"), "eval", "retrieval", "--corpus", str(corpus),
                               "--queries", str(queries), "--json").stdout)
    assert out["queries"] == 3
    for name in ("dense", "bm25", "hybrid"):
        assert set(out[name]) == {"recall@1", "recall@5", "recall@10", "mrr@10"}
        assert all(0.0 <= v <= 1.0 for v in out[name].values())
    assert out["hybrid"]["recall@5"] == 1.0
