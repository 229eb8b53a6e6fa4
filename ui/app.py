"""The Gradio page: a chat tab with provenance beside each answer, and a knowledge tab to drop files.

Gradio is imported here (and only in ``ui/``); this module is imported only when the page is built
(``ui.server.create_app``), so the CLI and the API never load it. Every chat answer
goes through the service's generation queue; each browser session has its own conversation in a
``gr.State`` so several people chatting at once never see each other's history or provenance.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from assistant.answer import Answer
from assistant.config import AnswerConfig
from assistant.conversation import Turn
from knowledge.errors import FootnotesError
from knowledge.loaders import SUPPORTED_SUFFIXES

from . import render
from .service import MAX_K, Service

log = logging.getLogger(__name__)

# Clicks on tokens, "open source" buttons and spans become one Gradio event with what was picked.
PICK_JS = """
const pick = (e) => {
  const el = e.target.closest('[data-fn-token],[data-fn-chunk],[data-fn-span]');
  if (!el || !element.contains(el)) return;
  if (e.type === 'keydown' && e.key !== 'Enter' && e.key !== ' ') return;
  e.preventDefault();
  const d = el.dataset;
  if (d.fnToken !== undefined) {
    element.querySelectorAll('.fn-selected').forEach(s => s.classList.remove('fn-selected'));
    el.classList.add('fn-selected');
    trigger('click', {kind: 'token', index: Number(d.fnToken)});
  } else if (d.fnChunk !== undefined) {
    trigger('click', {kind: 'chunk', index: Number(d.fnChunk)});
  } else {
    trigger('click', {kind: 'span', index: Number(d.fnSpan)});
  }
};
element.addEventListener('click', pick);
element.addEventListener('keydown', pick);
"""

# The source viewer scrolls the cited text to the middle of its box whenever it shows a new place,
# and brings the viewer itself into sight when the user asked for it (not after each answer).
SCROLL_JS = """
watch('value', () => requestAnimationFrame(() => {
  const mark = element.querySelector('#fn-cited');
  if (!mark) return;
  const box = mark.closest('.fn-source-text');
  if (box) box.scrollTop = mark.offsetTop - Math.max(8, (box.clientHeight - mark.offsetHeight) / 2);
  if (element.querySelector('[data-fn-focus]')) {
    element.scrollIntoView({block: 'start'});
    mark.focus({preventScroll: true});
  }
}));
"""

# Settings shown per mode: (AnswerConfig field, label, modes it matters for; None = every retrieval mode).
MODE_SETTINGS: dict[str, tuple[str, ...] | None] = {
    "k": None,
    "prior_temperature": None,
    "max_new_tokens": ("*",),
    "beam_size": ("rag-token", "closed-book", "concat"),
    "rag_sequence_decoding": ("rag-sequence",),
    "rag_sequence_beams": ("rag-sequence",),
}
NO_RETRIEVAL = ("closed-book",)
EXTRA_PREFIXES = ("knn_", "realm_", "reader_")  # later modes' numeric settings are shown as they appear


@dataclass(frozen=True)
class ChatSession:
    """One browser session's conversation: its turns, and the provenance of each assistant message."""

    turns: tuple[Turn, ...] = ()
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)  # chatbot message index -> Answer JSON
    shown: dict[str, Any] | None = None  # the answer whose provenance is on screen

    def with_answer(self, question: str, answer: Answer, message_index: int) -> ChatSession:
        aj = answer.to_json()
        return ChatSession(self.turns + (Turn("user", question), Turn("assistant", answer.text)),
                           {**self.answers, message_index: aj}, aj)


def extra_settings() -> list[dataclasses.Field]:
    """Numeric and yes/no [answer] settings of later modes (kNN-LM's λ, k, temperature; REALM's
    threshold, ...), found by their name prefix, so a new setting shows up without a UI change."""
    return [f for f in dataclasses.fields(AnswerConfig)
            if f.name.startswith(EXTRA_PREFIXES) and f.type in ("float", "int", "bool", float, int, bool)]


def extra_widget(f: dataclasses.Field, value: Any):
    label = f.name.replace("_", " ")
    if f.type in ("bool", bool):
        return gr.Checkbox(value=value, label=label, elem_id=f"fn-{f.name}")
    return gr.Number(value=value, label=label, precision=0 if f.type in ("int", int) else None,
                     elem_id=f"fn-{f.name}")


def visible_for(name: str, mode: str) -> bool:
    modes = MODE_SETTINGS.get(name)
    if name.startswith(EXTRA_PREFIXES):
        return mode.split("-")[0] in name or name.startswith("reader_") and mode == "realm"
    if modes is None:
        return mode not in NO_RETRIEVAL
    return "*" in modes or mode in modes


def build_blocks(service: Service):
    """The whole page as a ``gr.Blocks`` (mounted on the FastAPI app by ``ui.server``)."""
    cfg = service.answer
    extras = extra_settings()
    with gr.Blocks(title="Footnotes", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session = gr.State(ChatSession())
        gr.Markdown("## Footnotes — chat with your documents, every word traced to its source")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        # The chatbot shows a message as (sanitised) HTML even without markdown: every message
                        # is escaped, so a question or answer holding markup reads as typed.
                        chatbot = gr.Chatbot(label="Conversation", height=430, elem_id="fn-chatbot",
                                             render_markdown=False, sanitize_html=True, buttons=["copy"],
                                             feedback_options=None)
                        with gr.Row():
                            question = gr.Textbox(placeholder="Ask about your documents…", show_label=False,
                                                  scale=5, elem_id="fn-question", lines=1, max_lines=6)
                            ask = gr.Button("Ask", variant="primary", scale=1, elem_id="fn-ask")
                        with gr.Row():
                            mode = gr.Dropdown(choices=service.modes(), value=cfg.mode, label="Answer mode",
                                               elem_id="fn-mode", scale=3)
                            new_chat = gr.Button("New conversation", scale=1, elem_id="fn-new-chat")
                        with gr.Accordion("Settings for this mode", open=False, elem_id="fn-settings"):
                            k = gr.Slider(1, MAX_K, step=1, value=cfg.k, label="k: chunks retrieved per question", elem_id="fn-k")
                            temperature = gr.Slider(0.01, 2.0, step=0.01, value=cfg.prior_temperature,
                                                    label="Prior temperature: p(z|x) = softmax(score / T)",
                                                    elem_id="fn-temperature")
                            max_tokens = gr.Slider(4, 512, step=4, value=cfg.max_new_tokens,
                                                   label="Max answer tokens", elem_id="fn-max-tokens")
                            beams = gr.Slider(1, 8, step=1, value=cfg.beam_size, label="Beam size (1 = greedy)", elem_id="fn-beams")
                            decoding = gr.Radio(["fast", "thorough"], value=cfg.rag_sequence_decoding,
                                                label="RAG-Sequence decoding", elem_id="fn-decoding")
                            seq_beams = gr.Slider(1, 8, step=1, value=cfg.rag_sequence_beams,
                                                  label="RAG-Sequence beams per document", elem_id="fn-seq-beams")
                            extra_inputs = [extra_widget(f, getattr(cfg, f.name)) for f in extras]
                        status = gr.HTML(elem_id="fn-status")
                    with gr.Column(scale=6):
                        gr.Markdown("### Answer and its sources")
                        answer_view = gr.HTML(render.message_html("Ask a question: the answer appears here with "
                                                                  "each word marked by the document it came from."),
                                              elem_id="fn-answer-view", js_on_load=PICK_JS)
                        detail_view = gr.HTML(elem_id="fn-token-detail", js_on_load=None)
                        source_view = gr.HTML(elem_id="fn-source-view", js_on_load=SCROLL_JS)
                        gr.Markdown("### Retrieved chunks")
                        chunks_view = gr.HTML(elem_id="fn-chunks-view", js_on_load=PICK_JS)
            with gr.Tab("Knowledge", id="knowledge"):
                gr.Markdown(f"Drop files to add them to the knowledge folder (up to {service.max_upload_bytes:,} "
                            "bytes each). They are indexed within seconds; a file with the same name replaces "
                            "the old version.")
                upload = gr.File(label="Drop or pick files", file_count="multiple", type="filepath",
                                 file_types=sorted(SUPPORTED_SUFFIXES), elem_id="fn-upload")
                upload_status = gr.HTML(elem_id="fn-upload-status")
                docs_view = gr.HTML(elem_id="fn-documents")
                with gr.Row():
                    doc_pick = gr.Dropdown(label="Document to delete", choices=[], elem_id="fn-doc-pick", scale=4)
                    delete = gr.Button("Delete document", variant="stop", scale=1, elem_id="fn-delete")
                timer = gr.Timer(2.0)

        settings_inputs = [mode, k, temperature, max_tokens, beams, decoding, seq_beams, *extra_inputs]
        setting_names = ["k", "prior_temperature", "max_new_tokens", "beam_size", "rag_sequence_decoding",
                         "rag_sequence_beams", *(f.name for f in extras)]
        setting_widgets = [k, temperature, max_tokens, beams, decoding, seq_beams, *extra_inputs]

        def overrides_of(values: list[Any]) -> dict[str, Any]:
            out = {}
            for name, value in zip(setting_names, values):
                default = getattr(cfg, name)
                if isinstance(default, bool):
                    value = bool(value)
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                out[name] = value
            return out

        def respond(message: str, chat: list, state: ChatSession, mode_name: str, *values: Any):
            chat = list(chat or [])
            if not (message or "").strip():
                yield chat, state, message, gr.skip(), gr.skip(), gr.skip(), gr.skip(), \
                    render.message_html("Type a question first.", "error")
                return
            chat += [{"role": "user", "content": render.esc(message)}, {"role": "assistant", "content": "…"}]
            waiting = service.queue.waiting
            note = f"Waiting for {waiting} answer(s) ahead…" if waiting else "Retrieving and generating…"
            yield chat, state, "", gr.skip(), "", gr.skip(), gr.skip(), render.message_html(note)
            stream = None
            try:
                stream = service.stream(message, state.turns, mode_name, overrides_of(list(values)))
                text, answer = "", None
                for item in stream:
                    if isinstance(item, Answer):
                        answer = item
                        break
                    text += item.text
                    chat[-1] = {"role": "assistant", "content": render.esc(text)}
                    yield chat, state, "", render.message_html(text), "", gr.skip(), gr.skip(), \
                        render.message_html("Generating…")
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
            aj = state.shown
            yield (chat, state, "", render.answer_html(aj), "", render.chunks_html(aj), cited_source(aj),
                   render.message_html(f"Answered with {answer.mode}: {len(answer.tokens)} tokens from "
                                       f"{len(answer.chunks)} chunks."))

        def cited_source(aj: dict[str, Any]) -> str:
            chunks = aj.get("chunks", [])
            if not chunks:
                return ""
            posts = [c.get("posterior") for c in chunks]
            key = posts if all(p is not None for p in posts) else [c.get("prior") or 0.0 for c in chunks]
            best = max(range(len(chunks)), key=key.__getitem__)
            return open_location(aj, "chunk", best, focus=False)

        def open_location(aj: dict[str, Any] | None, kind: str, index: int, focus: bool = True) -> str:
            where = render.span_location(aj or {}, kind, index)
            if where is None:
                return ""
            source, start, end = where
            try:
                text = service.document_text(source)
            except FootnotesError as exc:
                return render.message_html(str(exc), "error")
            note = ""
            if kind == "chunk":
                cited = (aj or {})["chunks"][index]["text"]
                if text[start:end] != cited:
                    found = text.find(cited)
                    if found < 0:
                        return render.source_html(source, cited, 0, len(cited), "this document changed since "
                                                  "the answer; showing the chunk as cited", focus)
                    start, end, note = found, found + len(cited), "this document changed since the answer"
            return render.source_html(source, text, start, end, note, focus)

        def on_pick(state: ChatSession, evt: gr.EventData):
            data = getattr(evt, "_data", None) or {}
            kind, index = data.get("kind"), data.get("index")
            if state.shown is None or not isinstance(index, int):
                return gr.skip(), gr.skip()
            if kind == "token":
                return render.token_detail_html(state.shown, index), gr.skip()
            return gr.skip(), open_location(state.shown, kind, index)

        def on_select_message(state: ChatSession, evt: gr.SelectData):
            index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
            aj = state.answers.get(index) if index is not None else None
            if aj is None:
                return state, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            state = dataclasses.replace(state, shown=aj)
            return state, render.answer_html(aj), "", render.chunks_html(aj), cited_source(aj)

        def on_new_chat():
            return [], ChatSession(), render.message_html("New conversation."), "", "", "", ""

        def on_mode(mode_name: str):
            return [gr.update(visible=visible_for(name, mode_name)) for name in setting_names]

        def documents_view() -> str:
            summary = service.status().to_json()
            warnings = "".join(render.message_html(w, "error") for w in summary["warnings"])  # e.g. the folder is gone
            return warnings + render.documents_html([d.to_json() for d in service.documents()], summary)

        def doc_choices():
            return gr.update(choices=[d.doc_id for d in service.documents() if d.deletable], value=None)

        def on_upload(paths: list[str] | None):
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
            return "".join(messages), documents_view(), doc_choices(), None

        def on_delete(doc_id: str | None):
            if not doc_id:
                return render.message_html("Pick a document to delete.", "error"), gr.skip(), gr.skip()
            try:
                service.delete(doc_id)
                message = render.message_html(f"{doc_id}: deleted from the folder and both indexes.")
            except FootnotesError as exc:
                message = render.message_html(str(exc), "error")
            return message, documents_view(), doc_choices()

        chat_outputs = [chatbot, session, question, answer_view, detail_view, chunks_view, source_view, status]
        for trigger in (ask.click, question.submit):
            trigger(respond, inputs=[question, chatbot, session, *settings_inputs], outputs=chat_outputs,
                    concurrency_limit=1, concurrency_id="generation", api_visibility="private")
        answer_view.click(on_pick, inputs=[session], outputs=[detail_view, source_view], api_visibility="private")
        chunks_view.click(on_pick, inputs=[session], outputs=[detail_view, source_view], api_visibility="private")
        chatbot.select(on_select_message, inputs=[session],
                       outputs=[session, answer_view, detail_view, chunks_view, source_view], api_visibility="private")
        new_chat.click(on_new_chat, outputs=[chatbot, session, status, answer_view, detail_view, chunks_view,
                                             source_view], api_visibility="private")
        mode.change(on_mode, inputs=[mode], outputs=setting_widgets, api_visibility="private")
        upload.upload(on_upload, inputs=[upload], outputs=[upload_status, docs_view, doc_pick, upload],
                      api_visibility="private")
        delete.click(on_delete, inputs=[doc_pick], outputs=[upload_status, docs_view, doc_pick],
                     api_visibility="private")
        timer.tick(documents_view, outputs=[docs_view], show_progress="hidden", api_visibility="private")
        demo.load(lambda m: (documents_view(), doc_choices(), *on_mode(m)), inputs=[mode],
                  outputs=[docs_view, doc_pick, *setting_widgets], api_visibility="private")
    return demo
