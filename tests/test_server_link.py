"""`footnotes search` and `status` answer through a running `footnotes serve` of the same data dir
(ui/server_link.py): same JSON, no model (no torch) in the command, and `status` says who answered; a
stale announcement is ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_status import BLOCKED
from tests.ui_fixtures import make_service, running
from ui.server import create_app
from ui.server_link import SERVER_FILE, announce, running_server

ROOT = Path(__file__).resolve().parent.parent


def cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOOTNOTES_")}
    return subprocess.run([sys.executable, "-c", BLOCKED, "--data-dir", str(data), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)


def test_search_and_status_answer_through_the_running_server(tmp_path):
    service = make_service(tmp_path)
    data = tmp_path / "data"
    try:
        with running(create_app(service, None)) as url:
            withdraw = announce(data, url)
            assert running_server(data) == url
            proc = cli(data, "search", "radium polonium", "--k", "2", "--json")
            assert proc.returncode == 0, proc.stderr  # torch, transformers and chromadb are unimportable here
            assert json.loads(proc.stdout) == [h.to_json() for h in service.search("radium polonium", 2)]
            assert f"answered by the server at {url.rstrip('/')}/" in proc.stderr

            text = cli(data, "status")
            assert text.returncode == 0, text.stderr
            lines = text.stdout.splitlines()
            assert lines[0] == "documents: 3" and lines[-1] == f"answered by: the server at {url.rstrip('/')}/"
            as_json = cli(data, "status", "--json")
            assert json.loads(as_json.stdout) == service.status().to_json()
            withdraw()
        assert not (data / SERVER_FILE).exists()
    finally:
        service.kb.close()


def test_a_stale_announcement_is_ignored(tmp_path):
    service = make_service(tmp_path)
    service.kb.close()
    data = tmp_path / "data"
    (data / SERVER_FILE).write_text(json.dumps({"url": "http://127.0.0.1:9/", "pid": 2 ** 22 + 12345}))
    assert running_server(data) is None
    proc = subprocess.run([sys.executable, "-m", "tests.fake_cli", "--data-dir", str(data), "status"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # the fake embedder built this data dir
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "documents: 3"
    assert proc.stdout.splitlines()[-1] == f"answered by: this command (the files in {data})"
