"""The HTTP API against a real knowledge base (fake embedder) and a tiny random LM: OpenAI-compatible
chat (the real OpenAI client, streaming included), search, models, documents, errors, queueing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assistant.conversation import Turn
from knowledge.registry import registered_names
from ui.server import create_app
from tests.ui_fixtures import make_service, running, service, wait_for, watching  # noqa: F401 - service is a fixture

QUESTION = "who discovered radium ?"


@pytest.fixture
def client(service) -> TestClient:
    return TestClient(create_app(service, with_ui=False))


def chat(client: TestClient, **body):
    body.setdefault("messages", [{"role": "user", "content": QUESTION}])
    return client.post("/v1/chat/completions", json=body)


def test_models_are_the_registered_modes(client) -> None:
    body = client.get("/v1/models").json()
    assert [m["id"] for m in body["data"]] == registered_names("footnotes.modes")
    assert body["object"] == "list" and body["default"] == "rag-token"


def test_chat_completion_carries_the_answer_and_its_provenance(client, service) -> None:
    r = chat(client, model="rag-token")
    assert r.status_code == 200
    body = r.json()
    expected = service.ask(QUESTION, mode="rag-token")
    assert body["object"] == "chat.completion" and body["model"] == "rag-token"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected.text}
    assert body["choices"][0]["finish_reason"] == "length"  # the tiny LM never stops before max_new_tokens
    assert body["footnotes"] == json.loads(json.dumps(expected.to_json()))
    assert body["footnotes"]["chunks"][0]["source"] == "curie.md"
    assert len(body["footnotes"]["tokens"]) == 6 and len(body["footnotes"]["tokens"][0]["posterior"]) == 2


def test_history_and_settings_reach_the_engine(client, service) -> None:
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "tell me about ada lovelace"},
                {"role": "assistant", "content": "ada wrote the first program"},
                {"role": "user", "content": [{"type": "text", "text": "where was she born ?"}]}]
    body = chat(client, model="rag-sequence", messages=messages, k=3, max_tokens=4,
                settings={"prior_temperature": 0.5}).json()
    history = [Turn("user", "tell me about ada lovelace"), Turn("assistant", "ada wrote the first program")]
    expected = service.ask("where was she born ?", history, "rag-sequence",
                           {"k": 3, "max_new_tokens": 4, "prior_temperature": 0.5})
    assert body["footnotes"] == json.loads(json.dumps(expected.to_json()))
    assert len(body["footnotes"]["chunks"]) == 3 and body["footnotes"]["mode"] == "rag-sequence"


def test_unknown_mode_is_a_400_listing_the_registered_modes(client) -> None:
    r = chat(client, model="gpt-4o")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "unknown mode 'gpt-4o'" in err["message"]
    assert ", ".join(registered_names("footnotes.modes")) in err["message"]


@pytest.mark.parametrize("body, words", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "last message must be a user message"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}]}, "role = 'tool'"),
    ({"messages": [{"role": "user", "content": "  "}]}, "empty"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "text only"),
    ({"settings": {"beams": 3}}, "unknown answer setting 'beams'"),
    ({"settings": {"prior_temperature": 0}}, "prior_temperature must be > 0"),
    ({"settings": {"k": "five"}}, "expected int"),
    ({"k": 1000}, "at most"),
    ({"max_tokens": 0}, "max_tokens"),
])
def test_bad_chat_requests_are_400_with_a_clear_message(client, body, words) -> None:
    r = chat(client, **body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


def test_an_empty_knowledge_base_is_a_503_that_says_what_to_do(tmp_path: Path) -> None:
    svc = make_service(tmp_path, docs={})
    try:
        r = chat(TestClient(create_app(svc, with_ui=False)), model="rag-token", stream=True)
        assert r.status_code == 503
        assert "add documents to the knowledge folder" in r.json()["error"]["message"]
        closed = chat(TestClient(create_app(svc, with_ui=False)), model="closed-book")
        assert closed.status_code == 200 and closed.json()["footnotes"]["chunks"] == []
    finally:
        svc.kb.close()


def test_streaming_sends_tokens_with_provenance_then_the_answer(client, service) -> None:
    expected = service.ask(QUESTION, mode="rag-token")
    with client.stream("POST", "/v1/chat/completions",
                       json={"model": "rag-token", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:-1]
    assert "".join(c["choices"][0]["delta"]["content"] for c in tokens) == expected.text
    assert [c["footnotes_token"] for c in tokens] == json.loads(json.dumps([t.to_json() for t in expected.tokens]))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["footnotes"] == json.loads(json.dumps(expected.to_json()))
    assert len({c["id"] for c in chunks}) == 1
    # issue 14: every streamed token and every token of the final answer carries its support label
    for token in [c["footnotes_token"] for c in tokens] + chunks[-1]["footnotes"]["tokens"]:
        support = token["support"]
        assert set(support) == {"label", "chunk", "pmi", "closed_book", "content"}
        assert support["label"] in ("document", "model") and len(support["pmi"]) == 2
        assert (support["chunk"] is None) == (support["label"] == "model")


def test_the_openai_client_works_streaming_and_not(service) -> None:
    openai = pytest.importorskip("openai")
    expected = service.ask(QUESTION, mode="rag-sequence")
    with running(create_app(service, with_ui=False)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        assert "rag-token" in [m.id for m in client.models.list()]
        done = client.chat.completions.create(model="rag-sequence", messages=[{"role": "user", "content": QUESTION}])
        assert done.choices[0].message.content == expected.text
        assert done.model_extra["footnotes"]["answer"] == expected.text

        stream = client.chat.completions.create(model="rag-sequence", stream=True,
                                                messages=[{"role": "user", "content": QUESTION}])
        pieces, last = [], None
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
            last = chunk
        assert "".join(pieces) == expected.text
        assert last.choices[0].finish_reason in ("stop", "length")
        assert last.model_extra["footnotes"]["chunks"][0]["source"] == "curie.md"

        with pytest.raises(openai.BadRequestError, match="registered modes"):
            client.chat.completions.create(model="no-such-mode", messages=[{"role": "user", "content": QUESTION}])


def test_search_returns_the_same_hits_as_footnotes_search_json(client, service) -> None:
    r = client.post("/v1/search", json={"query": "where was alan turing born", "k": 2})
    assert r.status_code == 200
    expected = [h.to_json() for h in service.kb.retriever.search("where was alan turing born", 2)]
    assert r.json() == json.loads(json.dumps(expected))
    assert r.json()[0]["source"] == "turing.md" and len(r.json()) == 2
    filtered = client.post("/v1/search", json={"query": "london", "k": 5, "prefix": "ada"}).json()
    assert {h["source"] for h in filtered} == {"ada.md"}


@pytest.mark.parametrize("body, status, words", [
    ({"query": "x", "k": 0}, 400, "k must be between"),
    ({"query": "   "}, 400, "query is empty"),
    ({"query": "x", "top_k": 3}, 400, "top_k"),
    ({"k": 3}, 400, "query"),
])
def test_bad_searches(client, body, status, words) -> None:
    r = client.post("/v1/search", json=body)
    assert r.status_code == status and words in r.json()["error"]["message"]


def test_unknown_routes_and_methods_are_json_errors(client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "POST /v1/chat/completions" in r.json()["error"]["message"]
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_upload_index_ask_delete_through_the_api(client, service) -> None:
    folder = service.folder()
    with watching(service):
        r = client.post("/v1/documents", files={"file": ("../../secret/epsilon.md", b"# Epsilon\n\nkappa lambda mu nu xi omicron .\n")})
        assert r.status_code == 201 and r.json()["saved"][0]["source"] == "epsilon.md"
        assert (folder / "epsilon.md").is_file() and not (folder.parent / "secret").exists()

        def indexed():
            docs = {d["source"]: d for d in client.get("/v1/documents").json()["documents"]}
            return docs.get("epsilon.md", {}).get("status") == "indexed" and docs["epsilon.md"]
        doc = wait_for(indexed)
        assert doc["chunks"] == 1 and doc["kind"] == "folder"
        hits = client.post("/v1/search", json={"query": "kappa lambda omicron", "k": 1}).json()
        assert hits[0]["source"] == "epsilon.md"

        r = client.delete("/v1/documents/epsilon.md")
        assert r.status_code == 200 and r.json()["removed"] == ["epsilon.md"]
        assert not (folder / "epsilon.md").exists()
        assert "epsilon.md" not in {d["source"] for d in client.get("/v1/documents").json()["documents"]}
        assert all(h["source"] != "epsilon.md" for h in client.post("/v1/search", json={"query": "kappa omicron", "k": 5}).json())
        store = service.kb.store
        assert store.dense.ids() == store.bm25.ids() == store.manifest.all_chunk_ids()
        assert client.delete("/v1/documents/epsilon.md").status_code == 404
        assert client.delete("/v1/documents/../../etc/passwd").status_code in (400, 404)


@pytest.mark.parametrize("name, data, status", [
    ("tool.exe", b"MZ", 415),
    ("passwd", b"root:x:0:0", 415),
    ("big.txt", b"x" * 10_001, 413),
])
def test_refused_uploads(client, service, name, data, status) -> None:
    before = sorted(p.name for p in service.folder().iterdir())
    r = client.post("/v1/documents", files={"file": (name, data)})
    assert r.status_code == status and r.json()["error"]["message"]
    assert sorted(p.name for p in service.folder().iterdir()) == before


def test_failed_documents_are_listed_with_their_reason(client, service) -> None:
    (service.folder() / "empty.md").write_text("   \n")
    service.kb.sync()
    docs = {d["source"]: d for d in client.get("/v1/documents").json()["documents"]}
    assert docs["empty.md"]["status"] == "failed" and "empty.md is empty" in docs["empty.md"]["error"]
    summary = client.get("/v1/documents").json()["summary"]
    assert summary["documents"] == 3 and summary["failed"][0]["source"] == "empty.md" and summary["last_sync"]


def test_concurrent_chats_do_not_mix_answers(client, service) -> None:
    questions = ["who discovered radium ?", "where was alan turing born ?", "who wrote the first program ?",
                 "where was ada lovelace born ?"]
    expected = {q: service.ask(q).to_json() for q in questions}
    results: dict[str, dict] = {}

    def ask(q: str) -> None:
        results[q] = chat(client, messages=[{"role": "user", "content": q}]).json()["footnotes"]

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == json.loads(json.dumps(expected))


def test_chats_waiting_in_line_do_not_starve_other_requests(client, service, monkeypatch) -> None:
    """50 chats queued behind a blocked generation hold no thread of the server's pool:
    searches and document listings still answer at once; then every chat completes."""
    import time

    gate = threading.Event()
    real_engine = service.engine

    class Gated:
        def __init__(self, engine) -> None:
            self.engine = engine

        def stream(self, *args, **kwargs):
            gate.wait(120)
            yield from self.engine.stream(*args, **kwargs)

    monkeypatch.setattr(service, "engine", lambda config: Gated(real_engine(config)))
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(chat(client, stream=i % 2 == 0).status_code))
               for i in range(50)]
    for t in threads:
        t.start()
    wait_for(lambda: service.queue.waiting == 50, timeout=60)
    started = time.monotonic()
    assert client.post("/v1/search", json={"query": "radium", "k": 1}).status_code == 200
    assert client.get("/v1/documents").status_code == 200
    assert time.monotonic() - started < 5
    gate.set()
    for t in threads:
        t.join(timeout=300)
    assert statuses == [200] * 50 and service.queue.waiting == 0
