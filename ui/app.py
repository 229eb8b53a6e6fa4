"""The Gradio page: a chat tab with provenance beside each answer, and a knowledge tab to drop files.

Gradio is imported here (and only in ``ui/``); this module is imported only when the page is built
(``ui.server.create_app``), so the CLI and the API never load it. One builder per tab wires
components to the handlers of ``ui/page.py`` (plain functions of the Service). Every chat answer
goes through the service's generation queue; each browser session has its own conversation in a
``gr.State`` so several people chatting at once never see each other's history or provenance.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from knowledge.loaders import SUPPORTED_SUFFIXES

from . import page, render
from .mode_panel import PanelSetting, visible
from .page import ChatSession
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

SLIDERS = {"k": (1, MAX_K, 1), "prior_temperature": (0.01, 2.0, 0.01), "max_new_tokens": (4, 512, 4)}


def gradio_outputs(handler: Callable) -> Callable:
    """``handler`` with its ``page.SKIP`` outputs as ``gr.skip()``, for a handler that returns a tuple,
    one value, or yields tuples; its signature is kept (Gradio passes event data by annotation)."""
    def convert(out: Any) -> Any:
        if isinstance(out, tuple):
            return tuple(gr.skip() if o is page.SKIP else o for o in out)
        return gr.skip() if out is page.SKIP else out

    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream(*args: Any):
            for out in handler(*args):
                yield convert(out)
        return stream

    @functools.wraps(handler)
    def call(*args: Any):
        return convert(handler(*args))
    return call


def setting_widget(s: PanelSetting):
    """The input of one panel setting, by its type: checkbox, radio, slider (shared) or number."""
    info = f"{s.help} (default: {s.default})" if s.help else f"default: {s.default}"
    if s.kind == "bool":
        return gr.Checkbox(value=s.default, label=s.label, info=info, elem_id=s.elem_id)
    if s.kind == "choice":
        return gr.Radio(list(s.choices), value=s.default, label=s.label, info=info, elem_id=s.elem_id)
    if s.key in SLIDERS and s.elem_id in ("fn-k", "fn-temperature", "fn-max-tokens"):
        lo, hi, step = SLIDERS[s.key]
        return gr.Slider(lo, hi, step=step, value=s.default, label=s.label, elem_id=s.elem_id)
    if s.kind in ("int", "float"):
        return gr.Number(value=s.default, label=s.label, info=info, precision=0 if s.kind == "int" else None,
                         elem_id=s.elem_id)
    return gr.Textbox(value=s.default, label=s.label, info=info, elem_id=s.elem_id)


@dataclass
class ChatTab:
    """The chat tab's components that other parts of the page refer to."""

    mode: Any
    widgets: list
    settings: list[PanelSetting]


def build_chat_tab(service: Service) -> ChatTab:
    """The chat: conversation, question, mode and its settings panel; the answer with its sources."""
    session = gr.State(ChatSession())
    settings = page.settings_panel(service)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            # The chatbot shows a message as (sanitised) HTML even without markdown: every message
            # is escaped, so a question or answer holding markup reads as typed.
            chatbot = gr.Chatbot(label="Conversation", height=430, elem_id="fn-chatbot", render_markdown=False,
                                 sanitize_html=True, buttons=["copy"], feedback_options=None)
            with gr.Row():
                question = gr.Textbox(placeholder="Ask about your documents…", show_label=False, scale=5,
                                      elem_id="fn-question", lines=1, max_lines=6)
                ask = gr.Button("Ask", variant="primary", scale=1, elem_id="fn-ask")
            with gr.Row():
                mode = gr.Dropdown(choices=service.modes(), value=service.answer.mode, label="Answer mode",
                                   elem_id="fn-mode", scale=3)
                new_chat = gr.Button("New conversation", scale=1, elem_id="fn-new-chat")
            with gr.Accordion("Settings for this mode", open=False, elem_id="fn-settings"):
                widgets = [setting_widget(s) for s in settings]
            status = gr.HTML(elem_id="fn-status")
        with gr.Column(scale=6):
            gr.Markdown("### Answer and its sources")
            answer_view = gr.HTML(render.message_html("Ask a question: the answer appears here with each word marked "
                                                      "by the document it came from."),
                                  elem_id="fn-answer-view", js_on_load=PICK_JS)
            detail_view = gr.HTML(elem_id="fn-token-detail", js_on_load=None)
            source_view = gr.HTML(elem_id="fn-source-view", js_on_load=SCROLL_JS)
            gr.Markdown("### Retrieved chunks")
            chunks_view = gr.HTML(elem_id="fn-chunks-view", js_on_load=PICK_JS)

    def respond(message: str, chat: list, state: ChatSession, mode_name: str, *values: Any):
        yield from page.respond(service, settings, message, chat, state, mode_name, values)

    def on_pick(state: ChatSession, evt: gr.EventData):
        return page.pick(service, state, getattr(evt, "_data", None) or {})

    def on_select_message(state: ChatSession, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
        return page.select_message(service, state, index)

    chat_outputs = [chatbot, session, question, answer_view, detail_view, chunks_view, source_view, status]
    for trigger in (ask.click, question.submit):
        trigger(gradio_outputs(respond), inputs=[question, chatbot, session, mode, *widgets], outputs=chat_outputs,
                concurrency_limit=1, concurrency_id="generation", api_visibility="private")
    for view in (answer_view, chunks_view):
        view.click(gradio_outputs(on_pick), inputs=[session], outputs=[detail_view, source_view],
                   api_visibility="private")
    chatbot.select(gradio_outputs(on_select_message), inputs=[session],
                   outputs=[session, answer_view, detail_view, chunks_view, source_view], api_visibility="private")
    new_chat.click(page.new_chat, outputs=[chatbot, session, status, answer_view, detail_view, chunks_view,
                                           source_view], api_visibility="private")
    mode.change(functools.partial(shown_settings, settings), inputs=[mode], outputs=widgets, api_visibility="private")
    return ChatTab(mode, widgets, settings)


def shown_settings(settings: Sequence[PanelSetting], mode: str) -> list:
    return [gr.update(visible=v) for v in visible(settings, mode)]


@dataclass
class KnowledgeTab:
    documents: Any
    doc_pick: Any


def build_knowledge_tab(service: Service) -> KnowledgeTab:
    """The knowledge folder: drop files, see each document's status, delete one."""
    gr.Markdown(f"Drop files to add them to the knowledge folder (up to {service.max_upload_bytes:,} bytes each). "
                "They are indexed within seconds; a file with the same name replaces the old version.")
    upload = gr.File(label="Drop or pick files", file_count="multiple", type="filepath",
                     file_types=sorted(SUPPORTED_SUFFIXES), elem_id="fn-upload")
    upload_status = gr.HTML(elem_id="fn-upload-status")
    docs_view = gr.HTML(elem_id="fn-documents")
    with gr.Row():
        doc_pick = gr.Dropdown(label="Document to delete", choices=[], elem_id="fn-doc-pick", scale=4)
        delete = gr.Button("Delete document", variant="stop", scale=1, elem_id="fn-delete")
    timer = gr.Timer(2.0)

    def on_upload(paths: list[str] | None):
        return page.upload(service, paths), page.documents_view(service), doc_choices(service), None

    def on_delete(doc_id: str | None):
        if not doc_id:
            return page.delete(service, doc_id), gr.skip(), gr.skip()
        return page.delete(service, doc_id), page.documents_view(service), doc_choices(service)

    upload.upload(on_upload, inputs=[upload], outputs=[upload_status, docs_view, doc_pick, upload],
                  api_visibility="private")
    delete.click(on_delete, inputs=[doc_pick], outputs=[upload_status, docs_view, doc_pick], api_visibility="private")
    timer.tick(functools.partial(page.documents_view, service), outputs=[docs_view], show_progress="hidden",
               api_visibility="private")
    return KnowledgeTab(docs_view, doc_pick)


def doc_choices(service: Service):
    return gr.update(choices=page.deletable_documents(service), value=None)


def build_blocks(service: Service):
    """The whole page as a ``gr.Blocks`` (mounted on the FastAPI app by ``ui.server``)."""
    with gr.Blocks(title="Footnotes", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## Footnotes — chat with your documents, every word traced to its source")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(service)
            with gr.Tab("Knowledge", id="knowledge"):
                knowledge = build_knowledge_tab(service)

        def on_load(mode: str):
            return (page.documents_view(service), doc_choices(service), *shown_settings(chat.settings, mode))

        demo.load(on_load, inputs=[chat.mode], outputs=[knowledge.documents, knowledge.doc_pick, *chat.widgets],
                  api_visibility="private")
    return demo
