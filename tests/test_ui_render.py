"""The HTML of answers, chunks, sources and documents: escaped, labelled (not only coloured), located."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from knowledge.types import Chunk
from ui import render
from ui.documents import indexed_text

EVIL = '<script>alert("x")</script><img src=x onerror="alert(1)"> " onmouseover="alert(2)'


def answer_json(**extra) -> dict:
    chunks = [
        {"chunk_id": "c0", "source": "curie.md", "start": 10, "end": 40, "text": "Curie discovered radium.",
         "heading_path": ["Marie Curie"], "score": 0.03, "prior": 0.7, "posterior": 0.8},
        {"chunk_id": "c1", "source": "ada.md", "start": 0, "end": 20, "text": "Ada wrote a program.",
         "heading_path": [], "score": 0.02, "prior": 0.2, "posterior": 0.15},
        {"chunk_id": "c2", "source": "curie.md", "start": 50, "end": 70, "text": "She was born in Warsaw.",
         "heading_path": ["Marie Curie", "Early life"], "score": 0.01, "prior": 0.1, "posterior": 0.05},
    ]
    tokens = [
        {"text": "Curie", "prob": 0.9, "posterior": [0.5, 0.1, 0.4]},  # curie.md: 0.9
        {"text": " found", "prob": 0.8, "posterior": [0.6, 0.3, 0.1]},
        {"text": " Ada", "prob": 0.7, "posterior": [0.1, 0.8, 0.1]},  # ada.md
        {"text": ".", "prob": 0.9, "posterior": [0.3, 0.3, 0.4]},  # curie.md 0.7
    ]
    out = {"answer": "Curie found Ada.", "mode": "rag-token", "chunks": chunks, "tokens": tokens}
    out.update(extra)
    return out


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text += data


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def test_sources_are_numbered_by_document_in_retrieval_order() -> None:
    assert render.sources_of(answer_json()) == ["curie.md", "ada.md"]


def test_each_token_is_attributed_to_the_document_with_the_most_posterior() -> None:
    got = render.token_sources(answer_json())
    assert [n for n, _ in got] == [1, 1, 2, 1]
    assert abs(got[0][1] - 0.9) < 1e-9 and abs(got[3][1] - 0.7) < 1e-9


def test_answer_has_superscript_numbers_at_the_end_of_each_run_and_a_legend() -> None:
    html = render.answer_html(answer_json())
    refs = re.findall(r'<sup class="fn-ref[^"]*"[^>]*>\[(\d)\]</sup>', html)
    assert refs == ["1", "2", "1"]  # runs: "Curie found" [1], " Ada" [2], "." [1]
    assert html.count('class="fn-tok fn-c1') == 3 and html.count('class="fn-tok fn-c2') == 1
    assert "[1]</b> curie.md" in html and "[2]</b> ada.md" in html  # the legend names every number
    assert 'data-fn-token="2"' in html and 'title="[2] ada.md: 80.0%"' in html


def test_modes_without_token_posteriors_are_marked_in_words() -> None:
    aj = answer_json(mode="concat")
    for t in aj["tokens"]:
        t["posterior"] = []
    html = render.answer_html(aj)
    assert "fn-ref" not in html and html.count("fn-tok fn-none") == 4
    assert "gives no per-token document posterior" in html


def test_knn_tokens_are_attributed_through_their_neighbours_and_detailed() -> None:
    aj = answer_json(mode="knn-lm")
    aj["tokens"][2] = {"text": " Ada", "prob": 0.5, "posterior": [], "knn_share": 0.42,
                       "neighbours": [{"chunk_id": "c9", "source": "lovelace.md", "position": 3, "distance": 12.5},
                                      {"chunk_id": "c9", "source": "lovelace.md", "position": 4, "distance": 13.0}]}
    assert render.sources_of(aj) == ["curie.md", "ada.md", "lovelace.md"]
    assert render.token_sources(aj)[2] == (3, 1.0)
    detail = render.token_detail_html(aj, 2)
    assert "42.0%" in detail and "lovelace.md" in detail and "distance" in detail


def test_token_detail_lists_the_full_posterior_best_first() -> None:
    detail = render.token_detail_html(answer_json(), 0)
    shares = re.findall(r'<td class="fn-num">([\d.]+)%', detail)
    assert shares == ["50.0", "40.0", "10.0"]
    assert render.token_detail_html(answer_json(), 99) == ""


def test_chunk_cards_show_scores_prior_posterior_and_an_open_button() -> None:
    html = render.chunks_html(answer_json())
    assert html.count('data-fn-chunk="') == 3
    assert "prior p(z|x) 70.0%" in html and "posterior p(z|x,y) 80.0%" in html
    assert "Marie Curie › Early life" in html


def test_document_text_is_escaped_everywhere() -> None:
    aj = answer_json()
    aj["chunks"][0]["text"] = EVIL
    aj["chunks"][0]["source"] = 'x"><script>.md'
    aj["chunks"][0]["heading_path"] = [EVIL]
    aj["tokens"][0]["text"] = EVIL
    aj["n_best"] = [{"text": EVIL, "logprob": -1.0, "posterior": [1, 0, 0]},
                    {"text": "b", "logprob": -2.0, "posterior": [0, 1, 0]}]
    aj["spans"] = [{"text": EVIL, "source": EVIL, "start": 0, "end": 3}]
    pieces = [render.answer_html(aj), render.chunks_html(aj), render.token_detail_html(aj, 0),
              render.source_html(EVIL, EVIL + " tail", 0, 10, note=EVIL),
              render.documents_html([{"source": EVIL, "status": "failed", "chunks": 0, "error": EVIL}]),
              render.message_html(EVIL, EVIL)]
    for html in pieces:
        parsed = parse(html)
        assert "script" not in parsed.tags and "img" not in parsed.tags
        assert not {"onerror", "onmouseover"} & set(parsed.attrs)
        assert "<script>" in parsed.text  # shown as text


def test_source_view_marks_the_cited_span() -> None:
    text = "intro " * 5 + "THE CITED PART" + " outro" * 5
    start = text.index("THE")
    html = render.source_html("doc.md", text, start, start + 14)
    assert '<mark id="fn-cited" class="fn-cited" tabindex="-1">THE CITED PART</mark>' in html
    assert "characters 30–44 of" in html and "data-fn-focus" not in html
    assert "data-fn-focus" in render.source_html("doc.md", text, start, start + 14, focus=True)


def test_source_view_shows_a_window_around_far_spans() -> None:
    text = "a" * 20_000 + "HERE" + "b" * 20_000
    html = render.source_html("big.txt", text, 20_000, 20_004)
    assert ">HERE</mark>" in html and "… " in html and " …" in html
    assert len(html) < 2 * render.SOURCE_WINDOW + 1000


def test_span_location_of_chunks_and_realm_spans() -> None:
    aj = answer_json(spans=[{"chunk_id": "c2", "start": 16, "end": 22, "text": "Warsaw"},  # within the chunk
                            {"source": "curie.md", "start": 66, "end": 72, "text": "Warsaw"}])  # document offsets
    assert render.span_location(aj, "chunk", 1) == ("ada.md", 0, 20)
    assert render.span_location(aj, "span", 0) == ("curie.md", 66, 72)
    assert render.span_location(aj, "span", 1) == ("curie.md", 66, 72)
    assert render.span_location(aj, "chunk", 7) is None and render.span_location(aj, "span", 5) is None


def test_indexed_text_puts_every_chunk_at_its_offsets() -> None:
    doc = "# Title\n\nFirst part here.\n\n## Two\n\nSecond part, overlapping."
    spans = [(0, 25), (18, 34), (36, len(doc))]
    chunks = [Chunk(f"c{i}", "d.md", s, e, doc[s:e]) for i, (s, e) in enumerate(spans)]
    text = indexed_text(list(reversed(chunks)))
    for c in chunks:
        assert text[c.start:c.end] == c.text
    assert text[34:36] == "\n\n"


def test_documents_table_states_status_in_words() -> None:
    html = render.documents_html(
        [{"source": "a.md", "status": "indexed", "chunks": 3, "error": ""},
         {"source": "b.pdf", "status": "failed", "chunks": 0, "error": "b.pdf is encrypted"},
         {"source": "c.md", "status": "pending", "chunks": 0, "error": ""}],
        {"documents": 1, "chunks": {"manifest": 3, "chroma": 3, "bm25": 3}, "failed": [{}], "last_sync": "now"})
    assert "✓ indexed" in html and "✗ failed" in html and "… indexing" in html and "b.pdf is encrypted" in html
    assert "1 documents indexed · 3 chunks" in html


# -- support labels: content words from the model's memory -----------------------------------------
def sup(label: str, content: bool, chunk: int | None = None, pmi=(0.1, -0.2, 0.0), closed_book: float = 0.25) -> dict:
    return {"label": label, "chunk": chunk, "pmi": list(pmi), "closed_book": closed_book, "content": content}


def supported_answer() -> dict:
    """"Curie was born in Warsaw Poland, in 1867." — Curie and born supported, Warsaw Poland (one
    run) and 1867 (half its tokens unsupported) from the model's memory."""
    doc, mem = "document", "model"
    rows = [
        ("Curie", [0.5, 0.1, 0.4], sup(doc, True, 0, pmi=(2.5, None, 0.3))),
        (" was", [0.6, 0.3, 0.1], sup(mem, False)),
        (" born", [0.1, 0.8, 0.1], sup(doc, True, 2, pmi=(0.1, 0.2, 1.9))),  # posterior says ada.md, support curie.md
        (" in", [0.1, 0.8, 0.1], sup(mem, False)),  # posterior says ada.md, no chunk supports it
        (" War", [0.9, 0.05, 0.05], sup(mem, True, pmi=(0.4, -1.0, 0.2), closed_book=0.61)),
        ("saw", [0.9, 0.05, 0.05], sup(mem, True)),
        (" Poland", [0.9, 0.05, 0.05], sup(mem, True)),
        (",", [0.9, 0.05, 0.05], sup(mem, False)),
        (" in", [0.9, 0.05, 0.05], sup(mem, False)),
        (" 18", [0.9, 0.05, 0.05], sup(mem, True)),
        ("67", [0.9, 0.05, 0.05], sup(doc, True, 0)),
        (".", [0.9, 0.05, 0.05], sup(mem, False)),
    ]
    tokens = [{"text": text, "prob": 0.5, "posterior": post, "support": s} for text, post, s in rows]
    return answer_json(answer="".join(r[0] for r in rows), tokens=tokens)


def test_colouring_follows_the_support_label_not_the_posterior() -> None:
    got = [n for n, _ in render.token_sources(supported_answer())]
    # " born": chunk 2 (curie.md, [1]) supports it though the posterior favours ada.md; " in" and the
    # memory words: no chunk supports them, so no document colours them whatever the posterior says
    assert got == [1, None, 1, None, None, None, None, None, None, None, None, None]
    html = render.answer_html(supported_answer())
    assert 'data-fn-token="2"' in html and re.search(r'class="fn-tok fn-c1" data-fn-token="2"', html)
    assert re.search(r'class="fn-tok fn-none fn-unsupported" data-fn-token="4"', html)
    assert "[2]" not in re.sub(r"<li.*?</li>", "", html)  # ada.md colours nothing and closes no run


def test_content_words_from_memory_are_marked_and_function_words_are_not() -> None:
    html = render.answer_html(supported_answer())
    marked = re.findall(r'<span class="fn-tok [^"]*fn-unsupported[^"]*" data-fn-token="(\d+)"', html)
    assert marked == ["4", "5", "6", "9", "10"]  # Warsaw Poland, 1867 (a word is supported only if all of it is)
    assert not re.search(r'fn-unsupported[^"]*" data-fn-token="(1|3|7|8|11)"', html)  # was, in, ",", "."
    assert not re.search(r'fn-unsupported[^"]*" data-fn-token="(0|2)"', html)  # supported content words
    # one "?" after each run, outside colour: " Warsaw Poland?" and " 1867?"; the mark starts at the word
    tokens_html = re.search(r'<p class="fn-tokens">(.*?)</p>', html).group(1)
    assert tokens_html.count('<sup class="fn-q"') == 2
    assert re.search(r'data-fn-token="6"[^>]*><span class="fn-memory"> Poland</span></span><sup class="fn-q"', html)
    assert re.search(r'data-fn-token="4"[^>]*> <span class="fn-memory">War</span>', html)
    assert "from the model&#x27;s memory, not found in your documents" in html  # titles and the legend say it
    legend = re.search(r'<div class="fn-legend">.*</div>', html).group(0)
    assert "from the model&#x27;s memory, not found in your documents" in legend and "(3 content words)" in legend


def test_the_header_counts_supported_content_words() -> None:
    html = render.answer_html(supported_answer())
    head = re.search(r'<div class="fn-answer-head[^"]*" role="note">(.*?)</div>', html).group(1)
    text = parse(head).text
    assert "2 of 5 content words supported by your documents" in text and "3 marked" in text
    assert "came from the model's memory" in text
    assert html.index("fn-answer-head") < html.index("fn-tokens")  # a header, above the words
    all_good = supported_answer()
    for t in all_good["tokens"]:
        t["support"]["label"] = "document" if t["support"]["content"] else t["support"]["label"]
        t["support"]["chunk"] = 0 if t["support"]["content"] else None
    text = parse(render.summary_html(all_good)).text
    assert "5 of 5 content words supported" in text and "memory" not in text


def test_the_count_matches_the_assistant_content_word_labels() -> None:
    from assistant.answer import Support, TokenProvenance
    from assistant.support import content_word_labels
    from ui.support_marks import support_summary

    aj = supported_answer()
    tokens = [TokenProvenance(t["text"], t["prob"], tuple(t["posterior"]),
                              support=Support(**{**t["support"], "pmi": tuple(t["support"]["pmi"])})) for t in aj["tokens"]]
    assert [t.to_json() for t in tokens] == aj["tokens"]  # the hand-made dicts have the real JSON shape
    labels = content_word_labels(tokens)
    summary = support_summary(aj["tokens"])
    assert (summary.supported, summary.total) == (labels.count("document"), len(labels)) == (2, 5)


def test_answers_without_support_labels_have_no_marks_and_no_summary() -> None:
    html = render.answer_html(answer_json())
    assert "fn-answer-head" not in html and "fn-q" not in html and "fn-unsupported" not in html
    assert render.summary_html(answer_json()) == ""
    mixed = supported_answer()
    del mixed["tokens"][4]["support"]  # a token without a label is never marked
    assert 'fn-unsupported" data-fn-token="4"' not in render.answer_html(mixed)


def test_token_detail_shows_pmi_under_each_chunk_and_the_closed_book_probability() -> None:
    detail = render.token_detail_html(supported_answer(), 4)  # " War": from memory
    text = parse(detail).text
    assert "From the model's memory, not found in your documents" in text
    assert "Closed-book p(yi | x, ∅, y<i) = 0.610" in text
    pmis = re.findall(r'<td class="fn-num fn-pmi">([^<]*)', detail)
    assert pmis == ["+0.40", "+0.20", "-1.00"]  # by posterior: chunk 1 (90%), then the two at 5%, best PMI first
    detail = render.token_detail_html(supported_answer(), 0)  # "Curie": supported by chunk 1
    assert "Supported" in parse(detail).text and "PMI +2.50 nats" in parse(detail).text
    assert re.findall(r'<td class="fn-num fn-pmi">([^<]*)', detail) == ["+2.50 ", "+0.30", "–"]
    assert '<tr class="fn-supporting">' in detail and "✓ supports" in detail
    detail = render.token_detail_html(supported_answer(), 1)  # " was": a function word
    assert "not a content word" in parse(detail).text and "fn-q" not in detail


def test_marked_words_are_still_escaped() -> None:
    aj = supported_answer()
    aj["tokens"][4]["text"] = " " + EVIL
    aj["tokens"][6]["text"] = EVIL
    aj["chunks"][0]["source"] = EVIL
    for html in (render.answer_html(aj), render.token_detail_html(aj, 4), render.token_detail_html(aj, 0)):
        parsed = parse(html)
        assert "script" not in parsed.tags and "img" not in parsed.tags
        assert not {"onerror", "onmouseover"} & set(parsed.attrs)
        assert "<script>" in parsed.text


def test_terminal_marks_the_same_runs_with_and_without_a_tty() -> None:
    from ui.support_marks import terminal_text

    tokens = supported_answer()["tokens"]
    assert terminal_text(tokens) == "Curie was born in [?Warsaw Poland], in [?1867]."
    assert terminal_text(tokens, tty=True) == ("Curie was born in \x1b[4mWarsaw Poland\x1b[24m\x1b[1m?\x1b[22m, in "
                                               "\x1b[4m1867\x1b[24m\x1b[1m?\x1b[22m.")
    assert terminal_text(answer_json()["tokens"]) == "Curie found Ada."  # no labels: plain text


def test_the_terminal_streams_marks_and_prints_the_summary_line() -> None:
    import io

    from assistant.answer import Answer, Support, TokenProvenance
    from ui.commands.assistant import _stream_to_terminal

    aj = supported_answer()
    tokens = [TokenProvenance(t["text"], t["prob"], tuple(t["posterior"]),
                              support=Support(**{**t["support"], "pmi": tuple(t["support"]["pmi"])})) for t in aj["tokens"]]
    writes: list[str] = []

    class Out(io.StringIO):
        def write(self, s):
            writes.append(s)
            return super().write(s)

    class Engine:
        def stream(self, question, history, mode=None, k=None):
            yield from tokens
            yield Answer(aj["answer"], "rag-token", (), tuple(tokens))

    out = Out()
    answer = _stream_to_terminal(Engine(), "q", (), None, None, out=out)
    assert answer.text == aj["answer"]
    assert out.getvalue() == ("Curie was born in [?Warsaw Poland], in [?1867].\n"
                              "2 of 5 content words supported by your documents; marked ? came from the model's memory\n")
    assert writes[0] == "Curie was"  # streamed as it came: each word once its mark is final
