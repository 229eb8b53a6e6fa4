"""Hardening of `footnotes serve` from an adversarial pass (issue 11), the request side: what DELETE may
remove, redirects after login, credential throttling, abandoned and oversized requests, strings and
numbers that must be refused with a JSON error naming the field, and the upload odds and ends."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ui.auth import FAILED_LOGIN_DELAY, Login
from ui.server import create_app
from ui.uploads import UPLOAD_TEMP_PREFIX
from tests.ui_fixtures import make_service, running, service, wait_for  # noqa: F401 - service is a fixture

USER, PASSWORD = "ada", "correct horse battery staple"
QUESTION = "who discovered radium ?"


@pytest.fixture
def client(service) -> TestClient:
    return TestClient(create_app(service, with_ui=False), raise_server_exceptions=False)


def assert_json_error(r, status: int | None = None) -> dict:
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text[:200])
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["code"]
    if status is not None:
        assert r.status_code == status, (r.status_code, err)
    return err


# -- 1. DELETE removes only documents the index lists --------------------------------------------
NOT_DOCUMENTS = {".git/config": "[core]\n", ".hidden.md": "# hidden\n", "photo.jpg": "\xff\xd8\xff",
                 "partial.tmp": "half a download", "notes.md.swp": "swap", "sub/.env": "SECRET=1"}


def test_delete_refuses_every_file_the_index_does_not_list_and_leaves_it(client, service) -> None:
    folder = service.folder()
    for name, text in NOT_DOCUMENTS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "sub").mkdir(exist_ok=True)
    for name in [*NOT_DOCUMENTS, "sub", "sub/", ".git"]:
        r = client.delete(f"/v1/documents/{name}")
        assert_json_error(r, 404)
        with pytest.raises(Exception):
            service.delete(name)  # the page's delete button goes through the same check
    for name, text in NOT_DOCUMENTS.items():
        assert (folder / name).read_text() == text
    assert (folder / "sub").is_dir()
    r = client.delete("/v1/documents/curie.md")  # an indexed document still goes
    assert r.status_code == 200 and r.json()["removed"] == ["curie.md"] and not (folder / "curie.md").exists()


def test_delete_removes_a_failed_document_but_not_a_folder_or_a_link_target(client, service, tmp_path) -> None:
    folder = service.folder()
    (folder / "empty.md").write_text("  \n")
    outside = tmp_path / "outside.md"
    outside.write_text("# Outside\n\nnot yours .\n")
    (folder / "link.md").symlink_to(outside)
    service.kb.sync()
    assert {d.doc_id: d.status for d in service.documents()}["empty.md"] == "failed"
    assert client.delete("/v1/documents/empty.md").status_code == 200 and not (folder / "empty.md").exists()
    assert_json_error(client.delete("/v1/documents/link.md"), 404)  # a link out of the folder is not a document
    assert outside.read_text().startswith("# Outside") and (folder / "link.md").is_symlink()


# -- 2. no open redirect after login ---------------------------------------------------------------
@pytest.fixture(scope="module")
def login_app(tmp_path_factory):
    svc = make_service(tmp_path_factory.mktemp("login"))
    yield create_app(svc, Login(USER, PASSWORD), with_ui=False)
    svc.kb.close()


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/\r\nSet-Cookie: x=1", "/ /evil.example",
                                    "/\x00/evil.example", "/\\/evil.example", "/\u2028/evil.example",
                                    "https:/evil.example", "//evil.example", "/%09/evil.example".replace("%09", "\x0b")])
def test_login_redirects_only_to_a_same_origin_path(login_app, target) -> None:
    from urllib.parse import urljoin

    r = TestClient(login_app, follow_redirects=False).post(
        "/login", data={"username": USER, "password": PASSWORD, "next": target})
    assert r.status_code == 303
    location = r.headers["location"]
    assert location == "/"
    assert urljoin("http://127.0.0.1:7860/", location).startswith("http://127.0.0.1:7860/")


def test_login_keeps_an_honest_next_path(login_app) -> None:
    r = TestClient(login_app, follow_redirects=False).post(
        "/login", data={"username": USER, "password": PASSWORD, "next": "/?tab=knowledge&q=caf\u00e9"})
    assert r.status_code == 303 and r.headers["location"] == "/?tab=knowledge&q=caf%C3%A9"


# -- 3. every credential check is throttled per client ---------------------------------------------
def basic(user: str, word: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{word}".encode()).decode()}


@pytest.mark.parametrize("header", [basic(USER, "guess"), {"authorization": "Bearer guess"}])
def test_wrong_basic_and_bearer_credentials_are_slowed_down_per_client(login_app, header) -> None:
    anonymous = TestClient(login_app)
    started = time.monotonic()
    statuses: list[int] = []

    def guess() -> None:
        statuses.append(anonymous.get("/v1/models", headers=header).status_code)

    threads = [threading.Thread(target=guess) for _ in range(6)]  # parallel guesses wait in line too
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [401] * 6
    assert time.monotonic() - started >= 5 * FAILED_LOGIN_DELAY
    started = time.monotonic()
    assert anonymous.get("/v1/models", headers=basic(USER, PASSWORD)).status_code == 200
    assert time.monotonic() - started < 5 * FAILED_LOGIN_DELAY


# -- 8. a non-streaming chat whose client hangs up frees the queue ---------------------------------
def slow_tokens(service, monkeypatch, produced: list[int], delay: float = 0.05) -> None:
    real_engine = service.engine

    class Slow:
        def __init__(self, engine) -> None:
            self.engine = engine

        def stream(self, *args, **kwargs):
            for item in self.engine.stream(*args, **kwargs):
                produced.append(1)
                time.sleep(delay)
                yield item

    monkeypatch.setattr(service, "engine", lambda config: Slow(real_engine(config)))


def post_and_hang_up(base: str, body: dict, after: float) -> None:
    host, port = base.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     + f"content-length: {len(data)}\r\n\r\n".encode() + data)
        time.sleep(after)


def test_an_abandoned_non_streaming_chat_frees_the_queue_at_the_next_token(service, monkeypatch) -> None:
    produced: list[int] = []
    slow_tokens(service, monkeypatch, produced, delay=0.1)
    full = len(service.ask(QUESTION, overrides={"max_new_tokens": 200}).tokens)
    assert full > 30  # about 4 s of tokens when nobody hangs up
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 200, "stream": False}
    with running(create_app(service, with_ui=False)) as base:
        for _ in range(2):
            produced.clear()
            post_and_hang_up(base, body, after=0.4)
            wait_for(lambda: service.queue.waiting == 0, timeout=10)
            assert len(produced) < 12, f"{len(produced)} tokens generated for a client that left after 4"


# -- 9. bounded bodies, bounded questions ----------------------------------------------------------
def test_an_oversized_json_body_is_refused_before_it_is_read(client, service) -> None:
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 2_000_000}]})
    err = assert_json_error(client.post("/v1/chat/completions", content=big,
                                        headers={"content-type": "application/json"}), 413)
    assert "server.max_request_bytes" in err["message"]
    assert_json_error(client.post("/v1/search", content=json.dumps({"query": "y" * 2_000_000}),
                                  headers={"content-type": "application/json"}), 413)

    def chunked():
        for _ in range(40):
            yield b" " * 65536
    r = client.post("/v1/search", content=chunked(), headers={"content-type": "application/json"})
    assert_json_error(r, 413)
    assert service.queue.waiting == 0


def test_an_over_long_question_is_refused_before_the_queue(client, service, monkeypatch) -> None:
    queued: list[int] = []
    real = service.queue.stream
    monkeypatch.setattr(service.queue, "stream", lambda *args: queued.append(1) or real(*args))
    started = time.monotonic()
    err = assert_json_error(client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "radium " * 20_000}]}), 400)
    assert "characters" in err["message"] and "server.max_question_chars" in err["message"]
    tokens = "a " * (service.max_question_chars // 2 - 10)  # under the characters limit, over the tokens one
    assert service.max_question_tokens < service.max_question_chars // 2 - 10
    err = assert_json_error(client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": tokens}]}), 400)
    assert "tokens" in err["message"] and "server.max_question_tokens" in err["message"]
    assert time.monotonic() - started < 5 and not queued
    assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}).status_code == 200


# -- 10. every error of every route is the documented JSON error ----------------------------------
FUZZ = ["\ud800", "a\udfffb", "\x00", "nul\x00in the middle", "\x1b[31mred\x1b[0m", "\u202eevil\u202c", "\u2066x\u2069",
        "\ufeff", "\uffff", "\U0010ffff", "\r\n\t\v\f", "\u0085\u2028\u2029", "", " ", "%00", "../../etc/passwd"]


def raw_json(value: object) -> bytes:
    return json.dumps(value).encode()  # json.dumps writes a lone surrogate as the escape \ud800


def text_field_bodies(s: str) -> list[tuple[str, dict]]:
    user = {"role": "user", "content": QUESTION}
    return [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": s}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": s}]}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": s},
                                               user]}),
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": s}, user]}),
        ("/v1/chat/completions", {"messages": [{"role": s, "content": "x"}, user]}),
        ("/v1/chat/completions", {"messages": [user], "model": s}),
        ("/v1/chat/completions", {"messages": [user], "settings": {"stop": [s]}, "max_tokens": 2}),
        ("/v1/chat/completions", {"messages": [user], "settings": {"rag_sequence_decoding": s}}),
        ("/v1/chat/completions", {"messages": [user], "settings": {s: 1}}),
        ("/v1/chat/completions", {"messages": [user], "stream": True, "max_tokens": 2, "user": s}),
        ("/v1/search", {"query": s}),
        ("/v1/search", {"query": "radium", "prefix": s}),
        ("/v1/search", {"query": "radium", "types": [s]}),
        ("/v1/search", {"query": "radium", s: 1}),
    ]


@pytest.mark.parametrize("s", FUZZ, ids=[repr(s) for s in FUZZ])
def test_fuzzed_strings_in_every_text_field_get_an_answer_or_a_json_error(client, s) -> None:
    for route, body in text_field_bodies(s):
        r = client.post(route, content=raw_json(body), headers={"content-type": "application/json"})
        assert r.status_code in (200, 400, 404, 503), (route, body, r.status_code, r.text[:300])
        if r.status_code != 200:
            err = assert_json_error(r)
            if any(0xD800 <= ord(ch) <= 0xDFFF for ch in s):
                assert "surrogate" in err["message"], err
        elif route == "/v1/chat/completions" and body.get("stream"):
            for line in r.text.splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
    for path in ["/v1/documents/%ED%A0%80.md", "/v1/documents/a%00b.md", "/v1/nowhere%7F"]:
        r = client.delete(path)
        assert r.status_code in (400, 404), (path, r.status_code, r.text[:200])
        assert_json_error(r)


def test_a_lone_surrogate_is_refused_naming_the_field(client) -> None:
    body = {"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "x\ud800"},
                         {"role": "user", "content": QUESTION}]}
    err = assert_json_error(client.post("/v1/chat/completions", content=raw_json(body),
                                        headers={"content-type": "application/json"}), 400)
    assert "messages.1.content" in err["message"] and "surrogate" in err["message"]
    err = assert_json_error(client.post("/v1/search", content=raw_json({"query": "\ud800"}),
                                        headers={"content-type": "application/json"}), 400)
    assert "query" in err["message"]


def test_the_service_refuses_surrogates_from_the_page_too(service) -> None:
    from assistant.conversation import Turn

    with pytest.raises(ValueError, match="question.*surrogate"):
        service.stream("who \ud800 ?")
    with pytest.raises(ValueError, match="history.*surrogate"):
        service.stream(QUESTION, [Turn("user", "\udc00")])
    with pytest.raises(ValueError, match="query.*surrogate"):
        service.search("\ud800")


def test_an_unexpected_error_is_a_json_500(client, service, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(service, "documents", broken)
    err = assert_json_error(client.get("/v1/documents"), 500)
    assert "a bug" not in err["message"] and "server log" in err["message"]


# -- 11. numbers are numbers, and finite ------------------------------------------------------------
@pytest.mark.parametrize("extra, field", [
    ({"settings": {"prior_temperature": float("nan")}}, "prior_temperature"),
    ({"settings": {"prior_temperature": float("inf")}}, "prior_temperature"),
    ({"settings": {"length_penalty": float("-inf")}}, "length_penalty"),
    ({"settings": {"k": True}}, "k"),
    ({"settings": {"k": "3"}}, "k"),
    ({"settings": {"max_new_tokens": 2.0}}, "max_new_tokens"),
    ({"k": True}, "k"),
    ({"k": "3"}, "k"),
    ({"k": 2.5}, "k"),
    ({"k": float("nan")}, "k"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "4"}, "max_tokens"),
    ({"max_tokens": float("inf")}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"temperature": float("nan")}, "temperature"),
])
def test_non_finite_booleans_and_strings_for_numbers_are_refused_naming_the_field(client, extra, field) -> None:
    body = {"messages": [{"role": "user", "content": QUESTION}], **extra}
    if "max_new_tokens" not in extra.get("settings", {}):
        body.setdefault("max_tokens", 2)
    for stream in (False, True):
        if "stream" not in extra:
            body["stream"] = stream
        r = client.post("/v1/chat/completions", content=json.dumps(body).encode(),  # NaN / Infinity as Python writes them
                        headers={"content-type": "application/json"})
        err = assert_json_error(r, 400)
        assert field in err["message"], err


@pytest.mark.parametrize("body, field", [
    ({"query": "radium", "k": True}, "k"), ({"query": "radium", "k": "3"}, "k"),
    ({"query": "radium", "k": float("nan")}, "k"), ({"query": 5}, "query"), ({"query": "radium", "types": ".md"}, "types"),
])
def test_search_numbers_and_strings_are_strict(client, body, field) -> None:
    err = assert_json_error(client.post("/v1/search", content=json.dumps(body).encode(),
                                        headers={"content-type": "application/json"}), 400)
    assert field in err["message"]


# -- smaller ones ----------------------------------------------------------------------------------
def test_an_oversized_upload_is_refused_with_its_real_size_and_the_limit(tmp_path: Path) -> None:
    svc = make_service(tmp_path, max_upload_bytes=5_000_000)
    try:
        client = TestClient(create_app(svc, with_ui=False))
        r = client.post("/v1/documents", files={"file": ("big.txt", b"x" * 6_000_000)})
        err = assert_json_error(r, 413)
        assert "6,000,000 bytes" in err["message"] and "5,000,000" in err["message"], err
        assert not list(svc.folder().glob(".upload-*"))
    finally:
        svc.kb.close()


def test_upload_temp_files_left_by_a_crash_are_cleaned_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    for i in range(2):
        (folder / f"{UPLOAD_TEMP_PREFIX}abc{i}.tmp").write_bytes(b"")
    (folder / ".upload-notes.md").write_text("a user's own hidden file, not ours")
    svc = make_service(tmp_path)
    try:
        assert not list(folder.glob(f"{UPLOAD_TEMP_PREFIX}*.tmp"))
        assert (folder / ".upload-notes.md").exists()
    finally:
        svc.kb.close()


def test_an_upload_while_the_folder_is_missing_is_a_json_error(client, service) -> None:
    import shutil

    shutil.rmtree(service.folder())
    err = assert_json_error(client.post("/v1/documents", files={"file": ("new.md", b"# New\n\nnew text .\n")}), 503)
    assert "missing" in err["message"] and str(service.folder()) in err["message"]
    assert not os.path.exists(service.folder())
