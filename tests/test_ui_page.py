"""The web page's handlers as plain functions of a Service (ui/page.py), without Gradio: a chat
answer streams into a session that keeps typed Answers; clicks on tokens, chunks and messages;
uploads and deletes on the knowledge tab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from assistant.answer import Answer
from tests.ui_fixtures import service  # noqa: F401 - a fixture
from ui import page
from ui.page import SKIP, ChatSession

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "who discovered radium ?"


def ask(service, question=QUESTION, state=None, mode="rag-token", chat=None):
    panel = page.settings_panel(service)
    outputs = list(page.respond(service, panel, question, chat or [], state or ChatSession(), mode,
                                [s.default for s in panel]))
    return outputs


def test_the_handlers_import_no_gradio():
    code = "import sys, ui.page, ui.mode_panel; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_answer_streams_into_a_session_that_keeps_the_typed_answer(service):
    outputs = ask(service)
    first, *streamed, last = outputs
    assert first[1] == ChatSession() and first[3] is SKIP and "Retrieving" in first[7]
    assert len(streamed) == 6 and all("Generating" in o[7] for o in streamed)  # one update per token
    chat, state, box, answer_html, detail, chunks_html, source_html, status = last
    answer = state.shown
    assert isinstance(answer, Answer) and state.answers == {1: answer}
    assert answer == service.ask(QUESTION, mode="rag-token")  # the page's settings are the defaults
    assert chat[-1] == {"role": "assistant", "content": page.render.esc(answer.text)}
    assert state.turns[-1].text == answer.text and box == "" and detail == ""
    assert "data-fn-token" in answer_html and 'data-fn-chunk="1"' in chunks_html
    assert answer.cited_chunk().source in source_html and "from 2 chunks" in status


def test_an_empty_question_and_an_error_are_messages(service):
    (only,) = ask(service, "   ")
    assert "Type a question first" in only[7] and only[3] is SKIP
    *_, failed = ask(service, mode="no-such-mode")
    assert "unknown mode &#x27;no-such-mode&#x27;" in failed[3] and failed[0][-1]["content"].startswith("⚠")


def test_clicks_show_a_token_a_chunk_and_an_earlier_message(service):
    *_, last = ask(service)
    state = last[1]
    detail, source = page.pick(service, state, {"kind": "token", "index": 0})
    assert source is SKIP and "fn-" in detail
    detail, source = page.pick(service, state, {"kind": "chunk", "index": 1})
    assert detail is SKIP and state.shown.chunks[1].source in source
    assert page.pick(service, ChatSession(), {"kind": "token", "index": 0}) == (SKIP, SKIP)
    *_, second = ask(service, "who was ada lovelace ?", state, chat=last[0])
    state2 = second[1]
    assert sorted(state2.answers) == [1, 3] and state2.shown is state2.answers[3]
    back, answer_html, _, _, _ = page.select_message(service, state2, 1)
    assert back.shown is state.shown and back.answers == state2.answers
    assert page.select_message(service, state2, 0)[1:] == (SKIP,) * 4  # a user message has no answer


def test_a_changed_document_is_shown_where_the_chunk_now_is(service):
    *_, last = ask(service)
    answer = last[1].shown
    cited = answer.chunks[0]
    folder = service.folder()
    (folder / cited.source).write_text("a new first line\n\n" + (folder / cited.source).read_text())
    service.kb.sync()
    html = page.open_location(service, answer, "chunk", 0)
    assert "this document changed since the answer" in html


def test_upload_and_delete_from_the_knowledge_tab(service, tmp_path):
    dropped = tmp_path / "upload" / "notes.md"
    dropped.parent.mkdir()
    dropped.write_text("# Notes\n\nthe zorblat festival is in quillby .\n")
    message = page.upload(service, [str(dropped)])
    assert "notes.md: saved" in message and (service.folder() / "notes.md").is_file()
    assert "refused" in page.upload(service, [str(tmp_path / "upload" / "missing.md")])
    service.kb.sync()
    assert "notes.md" in page.deletable_documents(service) and "notes.md" in page.documents_view(service)
    assert "Pick a document" in page.delete(service, None)
    assert "notes.md: deleted" in page.delete(service, "notes.md")
    assert "notes.md" not in page.deletable_documents(service)
