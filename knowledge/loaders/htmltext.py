"""HTML to clean text with headings, streamed through the standard library's HTMLParser.

The parser is event-based and builds no tree, so nesting depth costs nothing (100,000 nested
``<div>`` are fine); markup that cannot close (``<`` after the last ``>``) is read as text. Scripts, styles, navigation, page headers/footers (also by ARIA role) and ``<head>`` are
dropped; a ``<header>``/``<footer>`` inside ``<article>`` or ``<main>`` is kept (it usually holds
the title).
Block elements become paragraphs separated by blank lines; each h1-h6 is its own paragraph.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ..errors import DocumentError
from ..types import LoadedDocument
from .text import decode_text, empty_error

_SKIP = frozenset({"script", "style", "nav", "noscript", "template", "head", "svg", "iframe", "object"})
_CHROME = frozenset({"header", "footer"})  # skipped unless inside article/main
_SKIP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})  # ARIA names of nav/header/footer
_SKIP_CLASSES = frozenset({"headerlink"})  # Sphinx's "¶" permalinks
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_CONTENT = frozenset({"article", "main"})
_PARAGRAPH = frozenset(
    "p div section article main aside blockquote pre ul ol dl table figure figcaption form "
    "fieldset address hr details summary body html center".split()
)
_LINE = frozenset("li dt dd tr br caption option".split())
_CELL = frozenset({"td", "th"})
_HEADING = {f"h{n}": n for n in range(1, 7)}
_SPACE = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def load_html(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    declared = _META_CHARSET.search(data[:4096])
    markup = decode_text(data, doc_id, declared.group(1).decode("ascii") if declared else None)
    builder = _TextBuilder()
    try:
        builder.feed(_unclosed_tail_as_text(markup))
        builder.close()
    except Exception as exc:  # a parser bug on hostile input is this document's failure, not the sync's
        raise DocumentError(f"{doc_id} could not be parsed as HTML ({exc!r}); check that it is an HTML page") from None
    text, headings = builder.result()
    if not text.strip():
        raise empty_error(doc_id)
    return LoadedDocument(doc_id=doc_id, text=text, headings=headings)


def _unclosed_tail_as_text(markup: str) -> str:
    """Escape every ``<`` after the last ``>``: none of them can open a complete tag, and Python's
    HTMLParser (before 3.11.13) rescans to the end for each, quadratic time (240 kB of ``</``: 26 s)."""
    end = markup.rfind(">") + 1
    return markup[:end] + markup[end:].replace("<", "&lt;")


class _TextBuilder(HTMLParser):
    """Collects visible text, paragraph breaks and h1-h6 (offset, level, title) while parsing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._length = 0
        self._break = ""  # "\n" or "\n\n" owed before the next text
        self._space = False  # a space owed before the next text
        self._skipping = _OpenElements()  # the dropped element and the elements open inside it
        self._content_depth = 0  # open article/main elements
        self._pre_depth = 0
        self._heading: list | None = None  # [level, offset, index in _parts]; None, None until its first text
        self._headings: list[tuple[int, int, str]] = []

    def result(self) -> tuple[str, tuple[tuple[int, int, str], ...]]:
        return "".join(self._parts), tuple(self._headings)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skipping or self._drops(tag, attrs):
            if tag not in _VOID:
                self._skipping.push(tag)
            return
        if tag in _CONTENT:
            self._content_depth += 1
        elif tag == "pre":
            self._pre_depth += 1
        if tag in _HEADING and self._heading is None:
            self._heading = [_HEADING[tag], None, None]
        self._block_edge(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            self._skipping.close(tag)
            return
        if tag in _CONTENT:
            self._content_depth = max(0, self._content_depth - 1)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _HEADING and self._heading is not None:
            self._end_heading()
        if tag != "br":
            self._block_edge(tag)

    def _drops(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP or (tag in _CHROME and not self._content_depth):
            return True
        for name, value in attrs:
            if value and (
                (name == "role" and value in _SKIP_ROLES) or (name == "class" and not _SKIP_CLASSES.isdisjoint(value.split()))
            ):
                return True
        return False

    def handle_data(self, data: str) -> None:
        if self._skipping or not data:
            return
        if self._pre_depth:
            self._write(data.replace("\r\n", "\n"))
            return
        text = _SPACE.sub(" ", data)
        if text.startswith(" "):
            self._space = True
        text = text.strip(" ")
        if text:
            self._write(text)
            self._space = data[-1].isspace()

    def _block_edge(self, tag: str) -> None:
        if tag in _PARAGRAPH or tag in _HEADING:
            self._owe("\n\n")
        elif tag in _LINE:
            self._owe("\n")
        elif tag in _CELL:
            self._space = True

    def _owe(self, newline: str) -> None:
        if self._length and len(newline) > len(self._break):
            self._break = newline
        self._space = False

    def _write(self, text: str) -> None:
        prefix = self._break or (" " if self._space and self._length else "")
        self._break, self._space = "", False
        if prefix:
            self._parts.append(prefix)
            self._length += len(prefix)
        if self._heading is not None and self._heading[1] is None:
            self._heading[1:] = [self._length, len(self._parts)]
        self._parts.append(text)
        self._length += len(text)

    def _end_heading(self) -> None:
        level, offset, first_part = self._heading
        self._heading = None
        if offset is None:
            return
        title = _SPACE.sub(" ", "".join(self._parts[first_part:])).strip()
        if title:
            self._headings.append((offset, level, title))


class _OpenElements:
    """A stack of tag names with O(1) membership; closing a tag pops back to its last opening."""

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._counts: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._stack)

    def push(self, tag: str) -> None:
        self._stack.append(tag)
        self._counts[tag] = self._counts.get(tag, 0) + 1

    def close(self, tag: str) -> None:
        if not self._counts.get(tag):
            return  # a stray end tag
        while True:
            top = self._stack.pop()
            self._counts[top] -= 1
            if top == tag:
                return
