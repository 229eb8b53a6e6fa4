"""Pure functions from an answer's JSON (``Answer.to_json()``) and document data to HTML.

Every piece of text that comes from a document, a question, an answer or a file name goes through
:func:`esc`: nothing a document contains can become markup in the browser. Provenance never relies
on colour alone: each run of tokens explained by one document ends with its source number in
superscript (``[1]``), the legend names every number, and each token's title gives the share.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .support_marks import MEMORY_NOTE, is_content, marked_runs, support_of, support_summary

# Okabe–Ito colours (distinguishable with the common colour-vision deficiencies), as light
# backgrounds with a solid underline; numbers are shown too, so more sources than colours is fine.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
SOURCE_WINDOW = 6000  # characters of the source shown on each side of the cited span
CHUNK_PREVIEW = 1200  # characters of a chunk shown on its card


def esc(text: Any) -> str:
    """HTML-escape any value, quotes included (safe in text and in attribute values)."""
    return html.escape("" if text is None else str(text), quote=True)


def pct(p: float | None) -> str:
    return "–" if p is None else f"{100 * p:.1f}%"


# -- sources and per-token attribution -----------------------------------------------------------
def sources_of(answer: Mapping[str, Any]) -> list[str]:
    """The distinct documents of the answer's chunks, in retrieval order: source n is ``[n]``."""
    out: list[str] = []
    for c in answer.get("chunks", []):
        if c["source"] not in out:
            out.append(c["source"])
    for t in answer.get("tokens", []):  # kNN-LM neighbours may cite documents no chunk came from
        for n in t.get("neighbours") or []:
            src = _neighbour_source(n)
            if src and src not in out:
                out.append(src)
    return out


def token_sources(answer: Mapping[str, Any]) -> list[tuple[int | None, float]]:
    """For each token: the number (1-based) of the document that explains it and that document's
    share of the chunk posterior (summed per document). A token's support label decides where it
    has one: "document" names the supporting chunk's document, "model" (no chunk made the token
    more likely than the model alone) names none, whatever the posterior says, and so does a
    content word only part of which a chunk supports (it is marked as the model's). Without a label,
    the document with the most posterior; for kNN-LM tokens without a posterior, the share of
    neighbours from each document. ``(None, 0.0)`` when nothing explains the token."""
    sources = sources_of(answer)
    chunk_doc = [sources.index(c["source"]) for c in answer.get("chunks", [])]
    marked = {i for a, b in marked_runs(answer.get("tokens", [])) for i in range(a, b + 1)}
    out: list[tuple[int | None, float]] = []
    for t in answer.get("tokens", []):
        shares = [0.0] * len(sources)
        posterior = t.get("posterior") or []
        if posterior and len(posterior) == len(chunk_doc):
            for doc, p in zip(chunk_doc, posterior):
                shares[doc] += p
        else:
            cited = [s for n in (t.get("neighbours") or []) if (s := _neighbour_source(n)) in sources]
            for s in cited:
                shares[sources.index(s)] += 1 / len(cited)
        support = support_of(t)
        if support is not None and (support["label"] == "model" or len(out) in marked):
            out.append((None, 0.0))  # no chunk supports it (or the rest of its word)
            continue
        chunk = support.get("chunk") if support is not None else None
        if isinstance(chunk, int) and not isinstance(chunk, bool) and 0 <= chunk < len(chunk_doc):
            out.append((chunk_doc[chunk] + 1, shares[chunk_doc[chunk]]))
            continue
        if not any(shares):
            out.append((None, 0.0))
            continue
        best = max(range(len(shares)), key=shares.__getitem__)
        out.append((best + 1, shares[best]))
    return out


def _neighbour_source(n: Any) -> str | None:
    if isinstance(n, Mapping):
        value = n.get("source") or n.get("doc_id")
        return str(value) if value else None
    return None


def colour_class(n: int | None) -> str:
    return "fn-none" if n is None else f"fn-c{(n - 1) % len(PALETTE) + 1}"


# -- the answer ------------------------------------------------------------------------------------
def answer_html(answer: Mapping[str, Any], selected: int | None = None) -> str:
    """The support summary, then the answer's tokens coloured by the document that supports them,
    each run closed by its superscript source number, content words from the model's memory
    underlined (dotted) and followed by a "?", then a legend. Tokens are focusable; selecting one
    shows its provenance."""
    tokens = answer.get("tokens", [])
    if not tokens:
        return f'<div class="fn-answer"><p class="fn-tokens">{esc(answer.get("answer", ""))}</p></div>'
    sources = sources_of(answer)
    attribution = token_sources(answer)
    run_of = {i: run for run in marked_runs(tokens) for i in range(run[0], run[1] + 1)}
    parts: list[str] = []
    for i, (t, (n, share)) in enumerate(zip(tokens, attribution)):
        label = _token_label(t, n, share, sources)
        run = run_of.get(i)
        classes = f"fn-tok {colour_class(n)}{' fn-unsupported' if run else ''}{' fn-selected' if i == selected else ''}"
        text = str(t["text"])
        body = esc(text)
        if run is not None:
            word = text.lstrip() if i == run[0] else text  # the mark starts at the word, not the space before it
            body = f'{esc(text[: len(text) - len(word)])}<span class="fn-memory">{esc(word)}</span>'
        parts.append(f'<span class="{classes}" data-fn-token="{i}" tabindex="0" role="button" title="{esc(label)}" '
                     f'aria-label="{esc(text)} — {esc(label)}">{body}</span>')
        if run is not None and i == run[1]:
            parts.append(f'<sup class="fn-q" title="{esc(MEMORY_NOTE)}" aria-hidden="true">?</sup>')
        run_ends = i + 1 == len(tokens) or attribution[i + 1][0] != n
        if run_ends and n is not None:
            parts.append(f'<sup class="fn-ref {colour_class(n)}" aria-hidden="true">[{n}]</sup>')
    return (f'<div class="fn-answer" data-mode="{esc(answer.get("mode", ""))}">{summary_html(answer)}'
            f'<p class="fn-tokens">{"".join(parts)}</p>{legend_html(answer, attribution)}</div>')


def _token_label(t: Mapping[str, Any], n: int | None, share: float, sources: Sequence[str]) -> str:
    """A token's provenance in words (its title and, after the text, its aria-label)."""
    support = support_of(t)
    if support is None:
        return "no document attribution" if n is None else f"[{n}] {sources[n - 1]}: {pct(share)}"
    if support["label"] == "model":
        return MEMORY_NOTE if is_content(t) else "no document made this more likely than the model alone"
    where = f"[{n}] {sources[n - 1]}" if n is not None else "a document"
    pmi = _pmi(support, support.get("chunk"))
    details = [f"PMI {pmi:+.2f} nats"] if pmi is not None else []
    if t.get("posterior"):
        details.append(f"posterior {pct(share)}")
    return f"{where}: supported" + (f" ({', '.join(details)})" if details else "")


def _pmi(support: Mapping[str, Any], chunk: Any) -> float | None:
    values = support.get("pmi") or []
    if isinstance(chunk, int) and 0 <= chunk < len(values) and isinstance(values[chunk], (int, float)):
        return float(values[chunk])
    return None


def summary_html(answer: Mapping[str, Any]) -> str:
    """The answer's header: how many of its content words the documents support (nothing for
    answers without support labels)."""
    summary = support_summary(answer.get("tokens", []))
    if summary is None:
        return ""
    if summary.total == 0:
        return ('<div class="fn-answer-head fn-all-supported" role="note">No content words (names, numbers, dates) '
                'to check against your documents.</div>')
    words = f"content word{'s' if summary.total != 1 else ''}"
    if not summary.unsupported:
        return (f'<div class="fn-answer-head fn-all-supported" role="note"><span aria-hidden="true">✓</span> '
                f'<b>{summary.supported} of {summary.total}</b> {words} supported by your documents.</div>')
    return (f'<div class="fn-answer-head fn-some-unsupported" role="note"><span aria-hidden="true">⚠</span> '
            f'<b>{summary.supported} of {summary.total}</b> {words} supported by your documents; '
            f'<b>{summary.unsupported}</b> marked <span class="fn-memory">like this</span><sup class="fn-q">?</sup> '
            "came from the model's memory.</div>")


def legend_html(answer: Mapping[str, Any], attribution: Sequence[tuple[int | None, float]] | None = None) -> str:
    sources = sources_of(answer)
    tokens = answer.get("tokens", [])
    attribution = token_sources(answer) if attribution is None else attribution
    counts = [sum(1 for n, _ in attribution if n == i + 1) for i in range(len(sources))]
    items = [f'<li><span class="fn-swatch {colour_class(i + 1)}" aria-hidden="true"></span>'
             f'<b>[{i + 1}]</b> {esc(s)} <span class="fn-muted">({c} token{"s" if c != 1 else ""})</span></li>'
             for i, (s, c) in enumerate(zip(sources, counts))]
    summary = support_summary(tokens)
    if summary is not None:
        items.append(f'<li class="fn-legend-memory"><span class="fn-memory">word</span><sup class="fn-q">?</sup> '
                     f'<b>{esc(MEMORY_NOTE)}</b> <span class="fn-muted">({summary.unsupported} content '
                     f'word{"s" if summary.unsupported != 1 else ""})</span></li>')
    marked = {i for a, b in marked_runs(tokens) for i in range(a, b + 1)}
    plain = [t for i, (t, (n, _)) in enumerate(zip(tokens, attribution)) if n is None and i not in marked]
    if any(support_of(t) is None for t in plain):
        items.append('<li><span class="fn-swatch fn-none" aria-hidden="true"></span>'
                     f'<b>no mark</b> <span class="fn-muted">this mode ({esc(answer.get("mode", ""))}) gives '
                     'no per-token document posterior</span></li>')
    elif plain:
        items.append('<li><span class="fn-swatch fn-none" aria-hidden="true"></span>'
                     '<b>no mark</b> <span class="fn-muted">no document made these more likely than the model '
                     'alone: function words ("the", "was"), punctuation, words of the question</span></li>')
    if not items:
        return ""
    if not sources:
        title = "Marks:"
    else:
        supports = "supports it" if summary is not None else "explains it most"
        title = f"Sources — each coloured run of words ends with the number of the document that {supports}:"
    return f'<div class="fn-legend"><span class="fn-legend-title">{title}</span><ul>{"".join(items)}</ul></div>'



def token_detail_html(answer: Mapping[str, Any], index: int) -> str:
    """One token's provenance: its probability, its support (the chunk that supports it, or the
    model's memory), its posterior and PMI under every chunk (best first), its closed-book
    probability, and for kNN-LM its datastore share and neighbours."""
    tokens = answer.get("tokens", [])
    if not 0 <= index < len(tokens):
        return ""
    t = tokens[index]
    support = support_of(t)
    table = _chunk_table(answer, t.get("posterior") or [], list(support.get("pmi") or []) if support else [],
                         support.get("chunk") if support else None)
    knn = ""
    if t.get("knn_share") is not None:
        knn = f'<p>Share of λ·p<sub>kNN</sub> in this token\'s probability: <b>{pct(t["knn_share"])}</b></p>'
    neighbours = _records_table(t.get("neighbours") or [], "datastore neighbours")
    verdict = _support_verdict(answer, t, support)
    if not (table or knn or neighbours or verdict):
        table = f'<p class="fn-muted">The {esc(answer.get("mode", ""))} mode gives no per-token provenance.</p>'
    return (f'<div class="fn-detail"><h4>Token {index + 1}: “{esc(t["text"])}”</h4>'
            f'<p>p(y<sub>i</sub> | x, y<sub>&lt;i</sub>) = {t.get("prob", 0.0):.3f}</p>{verdict}{table}{knn}{neighbours}</div>')


def _support_verdict(answer: Mapping[str, Any], t: Mapping[str, Any], support: Mapping[str, Any] | None) -> str:
    if support is None:
        return ""
    closed = support.get("closed_book")
    closed_line = ("" if not isinstance(closed, (int, float)) else
                   f'<p>Closed-book p(y<sub>i</sub> | x, ∅, y<sub>&lt;i</sub>) = {closed:.3f} '
                   '<span class="fn-muted">(the model with no documents)</span></p>')
    chunk = support.get("chunk")
    chunks = answer.get("chunks", [])
    if support["label"] == "document":
        where = "a retrieved chunk"
        if isinstance(chunk, int) and 0 <= chunk < len(chunks):
            n = sources_of(answer).index(chunks[chunk]["source"]) + 1
            where = f'<span class="fn-key {colour_class(n)}">[{n}]</span> {esc(chunks[chunk]["source"])} (chunk {chunk + 1})'
        pmi = _pmi(support, chunk)
        gain = f": PMI {pmi:+.2f} nats, {math.exp(min(pmi, 50.0)):.1f}× as likely as with no documents" if pmi is not None else ""
        whole = (' <span class="fn-muted">A content word is judged whole: the PMIs of its tokens add up, and a value '
                 "the chunk contains verbatim counts as copied from it.</span>") if is_content(t) else ""
        text = f"<b>Supported</b> by {where}{gain}.{whole}"
    elif is_content(t):
        why = ("no retrieved chunk made it markedly more likely than the model alone" if chunks else
               f"the {esc(answer.get('mode', ''))} mode answers without documents")
        text = (f'<span class="fn-memory">{esc(str(t["text"]).strip())}</span><sup class="fn-q">?</sup> '
                f"<b>{esc(MEMORY_NOTE[0].upper() + MEMORY_NOTE[1:])}</b>: {why}.")
    else:
        text = ("No retrieved chunk made this token markedly more likely than the model alone; it is not a content "
                "word (a function word, punctuation or a word of the question), so it is not marked.")
    return f'<div class="fn-support"><p>{text}</p>{closed_line}</div>'


def _chunk_table(answer: Mapping[str, Any], posterior: Sequence[float], pmi: Sequence[float | None],
                 supporting: Any) -> str:
    """A row per chunk (best posterior first, else best PMI): document, chunk, posterior, PMI."""
    chunks = answer.get("chunks", [])
    sources = sources_of(answer)
    n_rows = min(len(chunks), max(len(posterior), len(pmi)))
    has_post, has_pmi = bool(posterior), bool(pmi)

    def pmi_of(j: int) -> float | None:
        v = pmi[j] if j < len(pmi) else None
        return float(v) if isinstance(v, (int, float)) else None

    def key(j: int) -> tuple[float, float]:
        p = posterior[j] if j < len(posterior) else 0.0
        v = pmi_of(j)
        return (-p, -(v if v is not None else -math.inf)) if has_post else (-(v if v is not None else -math.inf), 0.0)

    rows = []
    for ci in sorted(range(n_rows), key=key):
        c = chunks[ci]
        n = sources.index(c["source"]) + 1
        heading = " › ".join(c.get("heading_path") or [])
        cells = (f'<td><span class="fn-key {colour_class(n)}">[{n}]</span> {esc(c["source"])}'
                 f'<div class="fn-muted">{esc(heading)}</div></td><td>chunk {ci + 1}</td>')
        if has_post:
            p = posterior[ci] if ci < len(posterior) else None
            bar = 0.0 if p is None else 100 * max(0.0, min(1.0, p))
            cells += (f'<td class="fn-num">{pct(p)}<div class="fn-bar"><span class="{colour_class(n)}" '
                      f'style="width:{bar:.1f}%"></span></div></td>')
        if has_pmi:
            v = pmi_of(ci)
            mark = ' <b class="fn-supports">✓ supports</b>' if ci == supporting else ""
            shown = "–" if v is None else f"{v:+.2f}"
            cells += f'<td class="fn-num fn-pmi">{shown}{mark}</td>'
        row_class = ' class="fn-supporting"' if ci == supporting else ""
        rows.append(f"<tr{row_class}>{cells}</tr>")
    if not rows:
        return ""
    head = "<th>document</th><th>chunk</th>"
    if has_post:
        head += "<th>p(z | x, y<sub>i</sub>, y<sub>&lt;i</sub>)</th>"
    if has_pmi:
        head += ('<th title="log p(y_i | x, z, y_&lt;i) − log p(y_i | x, ∅, y_&lt;i): how much this chunk raised '
                 'the token above the model alone">PMI (nats) against the model alone</th>')
    return f'<table class="fn-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _records_table(records: Sequence[Any], caption: str) -> str:
    """A table of JSON records whose fields are not known in advance (kNN-LM neighbours)."""
    if not records:
        return ""
    dicts = [r if isinstance(r, Mapping) else {"value": r} for r in records]
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{esc(_short(d.get(k)))}</td>" for k in keys) + "</tr>" for d in dicts[:50])
    more = f'<p class="fn-muted">… and {len(dicts) - 50} more</p>' if len(dicts) > 50 else ""
    return f'<table class="fn-table"><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>' \
           f"<tbody>{body}</tbody></table>{more}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = "" if value is None else str(value)
    return text if len(text) <= 160 else text[:157] + "…"


# -- retrieved chunks, n-best, spans ------------------------------------------------------------
def chunks_html(answer: Mapping[str, Any]) -> str:
    """A card per retrieved chunk (source, heading path, scores, prior, posterior, text) with a
    button that opens the source at the chunk; then the n-best answers and REALM spans, if any."""
    chunks = answer.get("chunks", [])
    sources = sources_of(answer)
    cards = []
    for i, c in enumerate(chunks):
        n = sources.index(c["source"]) + 1
        heading = " › ".join(c.get("heading_path") or [])
        text = c.get("text", "")
        preview = text if len(text) <= CHUNK_PREVIEW else text[:CHUNK_PREVIEW] + " …"
        cards.append(
            f'<li class="fn-chunk {colour_class(n)}"><div class="fn-chunk-head">'
            f'<span class="fn-key {colour_class(n)}">[{n}]</span> <b>{esc(c["source"])}</b>'
            f'{" › " + esc(heading) if heading else ""}</div>'
            f'<div class="fn-scores">rank {i + 1} · score {c.get("score", 0.0):.4f} · prior p(z|x) {pct(c.get("prior"))}'
            f' · posterior p(z|x,y) {pct(c.get("posterior"))} · characters {c.get("start")}–{c.get("end")}</div>'
            f'<blockquote class="fn-chunk-text">{esc(preview)}</blockquote>'
            f'<button type="button" class="fn-open" data-fn-chunk="{i}">Open [{n}] in the source</button></li>')
    body = f'<ol class="fn-chunks">{"".join(cards)}</ol>' if cards else \
        f'<p class="fn-muted">The {esc(answer.get("mode", ""))} mode retrieves no chunks.</p>'
    return f'<div class="fn-chunk-list">{body}{n_best_html(answer)}{spans_html(answer)}</div>'


def n_best_html(answer: Mapping[str, Any]) -> str:
    ranked = answer.get("n_best") or []
    if len(ranked) < 2:
        return ""
    sources = sources_of(answer)
    chunks = answer.get("chunks", [])
    items = []
    for r in ranked:
        post = r.get("posterior") or []
        best = max(range(len(post)), key=post.__getitem__) if post else None
        cite = ""
        if best is not None and best < len(chunks):
            n = sources.index(chunks[best]["source"]) + 1
            cite = f' <span class="fn-key {colour_class(n)}">[{n}] {pct(post[best])}</span>'
        items.append(f'<li>{esc(r.get("text", ""))} <span class="fn-muted">log p = {r.get("logprob", 0.0):.2f}</span>'
                     f"{cite}</li>")
    return f'<details class="fn-nbest"><summary>Other candidate answers ({len(ranked)})</summary><ol>{"".join(items)}</ol></details>'


def spans_html(answer: Mapping[str, Any]) -> str:
    """REALM answers: the extracted spans, each opening its chunk's source at the span."""
    spans = answer.get("spans") or []
    if not spans:
        return ""
    items = []
    for i, s in enumerate(spans):
        source = s.get("source", "") if isinstance(s, Mapping) else ""
        prob = s.get("prob", s.get("probability")) if isinstance(s, Mapping) else None
        text = s.get("text", "") if isinstance(s, Mapping) else str(s)
        items.append(f'<li>“{esc(text)}” <span class="fn-muted">{esc(source)} {pct(prob) if prob is not None else ""}'
                     f'</span> <button type="button" class="fn-open" data-fn-span="{i}">Open span in the source</button></li>')
    return f'<div class="fn-spans"><h4>Answer spans</h4><ol>{"".join(items)}</ol></div>'


def span_location(answer: Mapping[str, Any], kind: str, index: int) -> tuple[str, int, int] | None:
    """(source, start, end) of chunk ``index`` or REALM span ``index``. A span's offsets are taken as
    document offsets when they lie inside its chunk, else as offsets within the chunk."""
    if kind == "chunk":
        chunks = answer.get("chunks", [])
        if 0 <= index < len(chunks):
            c = chunks[index]
            return c["source"], int(c["start"]), int(c["end"])
        return None
    spans = answer.get("spans") or []
    if not 0 <= index < len(spans) or not isinstance(spans[index], Mapping):
        return None
    s = spans[index]
    chunks = answer.get("chunks", [])
    by_id = {c["chunk_id"]: c for c in chunks}
    chunk = by_id.get(s.get("chunk_id"))
    if chunk is None and isinstance(s.get("chunk"), int) and 0 <= s["chunk"] < len(chunks):
        chunk = chunks[s["chunk"]]
    source = s.get("source") or (chunk or {}).get("source")
    if source is None or "start" not in s or "end" not in s:
        return None
    start, end = int(s["start"]), int(s["end"])
    if chunk is not None and not (int(chunk["start"]) <= start and end <= int(chunk["end"])):
        start, end = start + int(chunk["start"]), end + int(chunk["start"])  # offsets within the chunk
    return str(source), start, end


# -- the source viewer ---------------------------------------------------------------------------
def source_html(doc_id: str, text: str, start: int, end: int, note: str = "", focus: bool = False) -> str:
    """The document around the cited span, with the span highlighted (``<mark id="fn-cited">``) for
    the page to scroll to; ``focus`` asks the page to bring the viewer itself into sight."""
    start = max(0, min(start, len(text)))
    end = max(start, min(end, len(text)))
    lo = max(0, start - SOURCE_WINDOW)
    hi = min(len(text), end + SOURCE_WINDOW)
    before = ("… " if lo > 0 else "") + text[lo:start]
    after = text[end:hi] + (" …" if hi < len(text) else "")
    head = (f'<div class="fn-source-head"><b>{esc(doc_id)}</b> <span class="fn-muted">characters {start}–{end} '
            f'of {len(text)}</span>{" — " + esc(note) if note else ""}</div>')
    return (f'<div class="fn-source"{" data-fn-focus" if focus else ""}>{head}<pre class="fn-source-text">{esc(before)}'
            f'<mark id="fn-cited" class="fn-cited" tabindex="-1">{esc(text[start:end])}</mark>{esc(after)}</pre></div>')


def message_html(text: str, kind: str = "info") -> str:
    return f'<p class="fn-message fn-{esc(kind)}" role="status">{esc(text)}</p>'


# -- the knowledge page --------------------------------------------------------------------------
STATUS_LABELS = {"indexed": "✓ indexed", "failed": "✗ failed", "pending": "… indexing"}


def documents_html(documents: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None = None) -> str:
    """The document table: name, status (in words, not only a colour), chunk count, error, time."""
    rows = []
    for d in documents:
        status = d.get("status", "")
        rows.append(f'<tr class="fn-doc fn-doc-{esc(status)}"><td>{esc(d.get("source"))}</td>'
                    f'<td class="fn-status">{esc(STATUS_LABELS.get(status, status))}</td>'
                    f'<td class="fn-num">{esc(d.get("chunks", 0))}</td><td>{esc(d.get("error", ""))}</td>'
                    f'<td class="fn-muted">{esc(d.get("updated_at") or "")}</td></tr>')
    line = ""
    if summary is not None:
        chunks = summary.get("chunks", {})
        line = (f'<p class="fn-summary">{esc(summary.get("documents", 0))} documents indexed · '
                f'{esc(chunks.get("manifest", 0))} chunks (Chroma {esc(chunks.get("chroma", 0))}, BM25 '
                f'{esc(chunks.get("bm25", 0))}) · {len(summary.get("failed", []))} failed · last sync '
                f'{esc(summary.get("last_sync") or "never")}</p>')
    if not rows:
        return f'{line}<p class="fn-muted">No documents yet: drop files above.</p>'
    return (f'{line}<table class="fn-table fn-docs"><thead><tr><th>document</th><th>status</th><th>chunks</th>'
            f'<th>error</th><th>last change (UTC)</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def palette_css() -> str:
    rules = []
    for i, colour in enumerate(PALETTE, 1):
        rules.append(f".fn-c{i}.fn-tok, .fn-swatch.fn-c{i}, .fn-bar .fn-c{i} {{ background: {colour}40; }}")
        rules.append(f".fn-c{i}.fn-tok {{ border-bottom: 3px solid {colour}; }}")
        rules.append(f".fn-chunk.fn-c{i} {{ border-left: 6px solid {colour}; }}")
        rules.append(f".fn-key.fn-c{i}, .fn-ref.fn-c{i} {{ background: {colour}33; border: 1px solid {colour}; }}")
        rules.append(f".fn-swatch.fn-c{i}, .fn-bar .fn-c{i} {{ background: {colour}; }}")
    return "\n".join(rules)


CSS = """
.fn-answer { font-size: 1.05rem; line-height: 2.1; }
.fn-tokens { white-space: pre-wrap; margin: 0 0 .6rem 0; }
.fn-tok { cursor: pointer; padding: 1px 0; border-radius: 2px; }
/* Content words from the model's memory: a dotted underline and a "?" (never colour alone). */
.fn-memory { text-decoration-line: underline; text-decoration-style: dotted; text-decoration-thickness: 2px;
  text-underline-offset: .25em; text-decoration-color: #8b0000; text-decoration-skip-ink: none; }
.fn-q { font-size: .72em; font-weight: 700; color: #8b0000; border: 1px dashed #8b0000; border-radius: 3px;
  padding: 0 3px; margin: 0 2px 0 1px; background: #fff; }
.fn-answer-head { font-size: .92rem; line-height: 1.5; border: 1px solid #ccc; border-radius: 5px; padding: .3rem .6rem;
  margin: 0 0 .5rem 0; background: #f7f7f7; }
.fn-answer-head.fn-some-unsupported { border-left: 5px double #8b0000; }
.fn-answer-head.fn-all-supported { border-left: 5px solid #444; }
.fn-legend-memory b { font-weight: 600; }
.fn-support { border-left: 3px solid #ccc; padding-left: .5rem; margin: .3rem 0; }
.fn-support p { margin: .2rem 0; }
.fn-supporting td { font-weight: 600; }
.fn-supports { font-size: .85em; }
.fn-tok:focus, .fn-tok.fn-selected { outline: 2px solid #222; outline-offset: 1px; }
.fn-ref { font-size: .7em; border-radius: 3px; padding: 0 2px; margin: 0 2px; font-weight: 600; }
.fn-legend { font-size: .85rem; line-height: 1.4; border-top: 1px solid #ddd; padding-top: .4rem; }
.fn-legend ul { list-style: none; padding: 0; margin: .3rem 0; }
.fn-legend li { margin: .15rem 0; }
.fn-swatch { display: inline-block; width: 1.1em; height: .9em; vertical-align: middle; margin-right: .35em;
  border: 1px solid #555; border-radius: 2px; }
.fn-swatch.fn-none { background: repeating-linear-gradient(45deg, #fff, #fff 2px, #bbb 2px, #bbb 4px); }
.fn-muted { color: #666; font-size: .85em; }
.fn-key { border-radius: 3px; padding: 0 3px; font-weight: 600; }
.fn-chunks { padding-left: 0; list-style: none; margin: 0; }
.fn-chunk { border: 1px solid #ddd; border-radius: 6px; padding: .5rem .7rem; margin: 0 0 .6rem 0; }
.fn-chunk-head { font-size: .95rem; }
.fn-scores { font-size: .8rem; color: #555; margin: .2rem 0; }
.fn-chunk-text { white-space: pre-wrap; margin: .3rem 0; font-size: .85rem; max-height: 12rem; overflow: auto;
  border-left: 2px solid #ccc; padding-left: .5rem; }
.fn-open { font-size: .8rem; padding: 2px 8px; border: 1px solid #888; border-radius: 4px; background: #f4f4f4;
  cursor: pointer; }
.fn-open:hover, .fn-open:focus { background: #e6e6e6; }
.fn-table { border-collapse: collapse; width: 100%; font-size: .85rem; }
.fn-table th, .fn-table td { border-bottom: 1px solid #e4e4e4; padding: 3px 6px; text-align: left; vertical-align: top; }
.fn-num { text-align: right; white-space: nowrap; }
.fn-bar { height: 6px; background: #eee; border-radius: 3px; min-width: 5rem; }
.fn-bar span { display: block; height: 6px; border-radius: 3px; }
.fn-source-text { position: relative; white-space: pre-wrap; word-wrap: break-word; font-size: .85rem; max-height: 28rem; overflow: auto;
  background: #fafafa; border: 1px solid #ddd; padding: .6rem; margin: .3rem 0; }
.fn-cited { background: #fff176; outline: 2px solid #c9a400; padding: 1px 0; }
.fn-doc-failed .fn-status { color: #a00; font-weight: 600; }
.fn-doc-pending .fn-status { color: #8a5a00; font-weight: 600; }
.fn-doc-indexed .fn-status { color: #006b2d; }
.fn-message.fn-error { color: #a00; font-weight: 600; }
""" + palette_css()
