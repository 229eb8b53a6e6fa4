"""What the web page does, as plain functions of a :class:`~ui.service.Service` and a session:
the Gradio builders in ``ui/app.py`` only wire them to components. Nothing here imports Gradio;
``SKIP`` marks an output that stays as it is (``gr.skip()`` on the page)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.answer import Answer
from assistant.conversation import Turn
from knowledge.errors import FootnotesError

from . import render
from .mode_panel import PanelSetting, overrides_of, panel
from .service import Service

SKIP = object()  # an output left unchanged


@dataclass(frozen=True)
class ChatSession:
    """One browser session's conversation: its turns, and the Answer behind each assistant message."""

    turns: tuple[Turn, ...] = ()
    answers: dict[int, Answer] = field(default_factory=dict)  # chatbot message index -> its Answer
    shown: Answer | None = None  # the answer whose provenance is on screen

    def with_answer(self, question: str, answer: Answer, message_index: int) -> ChatSession:
        return ChatSession(self.turns + (Turn("user", question), Turn("assistant", answer.text)),
                           {**self.answers, message_index: answer}, answer)


def settings_panel(service: Service) -> list[PanelSetting]:
    """The panel's inputs, valued at the service's configured defaults."""
    modes = service.modes()
    return panel(modes, service.answer, {m: service.settings(m).own for m in modes})


# -- the chat tab ----------------------------------------------------------------------------------
def respond(service: Service, settings: Sequence[PanelSetting], message: str, chat: list, state: ChatSession,
            mode: str, values: Sequence[Any]) -> Iterator[tuple]:
    """Answer one chat message, streaming. Yields (chatbot, session, question box, answer view,
    token detail, chunks view, source view, status)."""
    chat = list(chat or [])
    if not (message or "").strip():
        yield chat, state, message, SKIP, SKIP, SKIP, SKIP, render.message_html("Type a question first.", "error")
        return
    chat += [{"role": "user", "content": render.esc(message)}, {"role": "assistant", "content": "…"}]
    waiting = service.queue.waiting
    note = f"Waiting for {waiting} answer(s) ahead…" if waiting else "Retrieving and generating…"
    yield chat, state, "", SKIP, "", SKIP, SKIP, render.message_html(note)
    stream, answer = None, None
    try:
        stream = service.stream(message, state.turns, mode, overrides_of(settings, mode, values))
        text = ""
        for item in stream:
            if isinstance(item, Answer):
                answer = item
                break
            text += item.text
            chat[-1] = {"role": "assistant", "content": render.esc(text)}
            yield chat, state, "", render.message_html(text), "", SKIP, SKIP, render.message_html("Generating…")
    except (FootnotesError, ValueError) as exc:
        chat[-1] = {"role": "assistant", "content": render.esc(f"⚠ {exc}")}
        yield chat, state, "", render.message_html(str(exc), "error"), "", "", "", ""
        return
    finally:
        if stream is not None:
            stream.cancel()
    if answer is None:
        return
    chat[-1] = {"role": "assistant", "content": render.esc(answer.text)}
    state = state.with_answer(message, answer, len(chat) - 1)
    aj = answer.to_json()
    yield (chat, state, "", render.answer_html(aj), "", render.chunks_html(aj), cited_source(service, answer),
           render.message_html(f"Answered with {answer.mode}: {len(answer.tokens)} tokens from "
                               f"{len(answer.chunks)} chunks."))


def cited_source(service: Service, answer: Answer) -> str:
    """The source view at the chunk the answer cites most."""
    cited = answer.cited_chunk()
    if cited is None:
        return ""
    return open_location(service, answer, "chunk", answer.chunks.index(cited), focus=False)


def open_location(service: Service, answer: Answer | None, kind: str, index: int, focus: bool = True) -> str:
    """The source view at chunk ``index`` or span ``index`` of the answer (found again by its text
    when the document changed since)."""
    aj = answer.to_json() if answer is not None else {}
    where = render.span_location(aj, kind, index)
    if where is None:
        return ""
    source, start, end = where
    try:
        text = service.document_text(source)
    except FootnotesError as exc:
        return render.message_html(str(exc), "error")
    note = ""
    if kind == "chunk":
        cited = aj["chunks"][index]["text"]
        if text[start:end] != cited:
            found = text.find(cited)
            if found < 0:
                return render.source_html(source, cited, 0, len(cited), "this document changed since "
                                          "the answer; showing the chunk as cited", focus)
            start, end, note = found, found + len(cited), "this document changed since the answer"
    return render.source_html(source, text, start, end, note, focus)


def pick(service: Service, state: ChatSession, data: dict[str, Any]) -> tuple[Any, Any]:
    """A click on a token, a chunk's "open source" or a span: (token detail, source view)."""
    kind, index = data.get("kind"), data.get("index")
    if state.shown is None or not isinstance(index, int):
        return SKIP, SKIP
    if kind == "token":
        return render.token_detail_html(state.shown.to_json(), index), SKIP
    return SKIP, open_location(service, state.shown, kind, index)


def select_message(service: Service, state: ChatSession, index: int | None) -> tuple:
    """A click on a chat message shows its answer's provenance: (session, answer, detail, chunks, source)."""
    answer = state.answers.get(index) if index is not None else None
    if answer is None:
        return state, SKIP, SKIP, SKIP, SKIP
    aj = answer.to_json()
    return (dataclasses.replace(state, shown=answer), render.answer_html(aj), "", render.chunks_html(aj),
            cited_source(service, answer))


def new_chat() -> tuple:
    return [], ChatSession(), render.message_html("New conversation."), "", "", "", ""


# -- the knowledge tab -----------------------------------------------------------------------------
def documents_view(service: Service) -> str:
    summary = service.status().to_json()
    warnings = "".join(render.message_html(w, "error") for w in summary["warnings"])  # e.g. the folder is gone
    return warnings + render.documents_html([d.to_json() for d in service.documents()], summary)


def deletable_documents(service: Service) -> list[str]:
    return [d.doc_id for d in service.documents() if d.deletable]


def upload(service: Service, paths: Sequence[str] | None) -> str:
    """Save the dropped files into the knowledge folder: one message per file."""
    messages = []
    for path in paths or []:
        name = Path(path).name
        try:
            saved = service.upload_file(name, Path(path))
            verb = "replaced" if saved.replaced else "saved"
            messages.append(render.message_html(f"{saved.doc_id}: {verb} ({saved.size:,} bytes); indexing — "
                                                "its status below turns to ✓ indexed when it is ready."))
        except (FootnotesError, OSError) as exc:
            messages.append(render.message_html(f"{name}: refused — {exc}", "error"))
    return "".join(messages)


def delete(service: Service, doc_id: str | None) -> str:
    if not doc_id:
        return render.message_html("Pick a document to delete.", "error")
    try:
        service.delete(doc_id)
        return render.message_html(f"{doc_id}: deleted from the folder and both indexes.")
    except FootnotesError as exc:
        return render.message_html(str(exc), "error")
