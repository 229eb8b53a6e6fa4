"""Shared pieces of the UI tests: a service over a real knowledge base (fake embedder, tiny LM)
and a real uvicorn server on 127.0.0.1 with a free port."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typing import Iterator

from assistant.config import AnswerConfig
from knowledge.kb import KnowledgeBase
from tests.conftest import small_config
from tests.fakes import HashingEmbedder
from tests.tinylm import make_generator
from ui.service import Service

DOCS = {
    "curie.md": "# Marie Curie\n\nmarie curie discovered radium and polonium in paris .\n",
    "ada.md": "# Ada Lovelace\n\nada lovelace wrote the first program . she was born in london in 1815 .\n",
    "turing.md": "# Alan Turing\n\nalan turing was born in london . he was a mathematician .\n",
}


def make_service(tmp_path: Path, docs: dict[str, str] | None = None, max_upload_bytes: int = 10_000,
                 answer: AnswerConfig | None = None) -> Service:
    folder = tmp_path / "knowledge"
    folder.mkdir(exist_ok=True)
    for name, text in (DOCS if docs is None else docs).items():
        (folder / name).write_text(text)
    kb = KnowledgeBase.open(small_config(), tmp_path / "data", folder=folder, embedder=HashingEmbedder())
    kb.sync()
    answer = answer or AnswerConfig(k=2, max_new_tokens=6, finish_word_tokens=0, loop_words=0, refuse_echoes=False)
    return Service(kb, make_generator(), answer, max_upload_bytes)


@contextmanager
def watching(service: Service) -> Iterator[None]:
    stop = threading.Event()
    threads = service.kb.watch(stop, on_report=service.record)
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for(predicate, timeout: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


@pytest.fixture
def service(tmp_path: Path):
    """A Service over a small knowledge base in tmp_path (closed afterwards): import it into a test module."""
    svc = make_service(tmp_path)
    yield svc
    svc.kb.close()
