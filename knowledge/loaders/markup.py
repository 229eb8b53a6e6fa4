"""Markdown and reStructuredText: the decoded file is the text; headings are found line by line.

Markdown: ATX ``#`` headings and single-line setext headings, never inside fenced code or YAML
front matter. reStructuredText: underlined and over+underlined titles; a title's level is the order
in which its adornment style (character, with or without overline) first appears, as in docutils.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..types import LoadedDocument
from .text import decode_text

Heading = tuple[int, int, str]

_MD_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_MD_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_MD_ATX_CLOSE = re.compile(r"(?:^|[ \t]+)#+$")
_MD_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_MD_NOT_PARAGRAPH = re.compile(r" {0,3}(?:[-*+>|]|\d+[.)]|#)|\s{4}")  # list, quote, table, ATX, code

_RST_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1+[ \t]*$")
_RST_ROLE = re.compile(r":[A-Za-z][\w.+:-]*:`[~.]?([^`<]*?)\s*(?:<[^>]*>)?`")
_RST_MARKUP = re.compile(r"``|\*\*|`")


def load_markdown(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    text = decode_text(data, doc_id)
    return LoadedDocument(doc_id=doc_id, text=text, headings=markdown_headings(text))


def load_rst(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    text = decode_text(data, doc_id)
    return LoadedDocument(doc_id=doc_id, text=text, headings=rst_headings(text))


def _lines(text: str) -> tuple[list[str], list[int]]:
    """The lines of ``text`` and the offset where each starts."""
    lines = text.split("\n")
    offsets, at = [], 0
    for line in lines:
        offsets.append(at)
        at += len(line) + 1
    return lines, offsets


def markdown_headings(text: str) -> tuple[Heading, ...]:
    lines, offsets = _lines(text)
    headings: list[Heading] = []
    fence = ""  # the opening fence while inside fenced code
    i = _front_matter_end(lines)
    while i < len(lines):
        line = lines[i]
        if fence:
            if _closes_fence(line, fence):
                fence = ""
        elif m := _MD_FENCE.match(line):
            if not (m.group(1)[0] == "`" and "`" in line[m.end():]):
                fence = m.group(1)
        elif m := _MD_ATX.match(line):
            title = _MD_ATX_CLOSE.sub("", (m.group(2) or "")).strip()
            if title:
                headings.append((offsets[i], len(m.group(1)), title))
        elif _is_setext_title(lines, i):
            level = 1 if lines[i + 1].strip()[0] == "=" else 2
            headings.append((offsets[i], level, line.strip()))
            i += 1
        i += 1
    return tuple(headings)


def _front_matter_end(lines: list[str]) -> int:
    """Index of the first line after YAML front matter (``---`` ... ``---``), or 0 without one."""
    if lines and lines[0].rstrip() == "---":
        for i in range(1, len(lines)):
            if lines[i].rstrip() in ("---", "..."):
                return i + 1
    return 0


def _is_setext_title(lines: list[str], i: int) -> bool:
    """A one-line paragraph (blank line or start above) underlined with ``===`` or ``---``."""
    line = lines[i]
    return (
        i + 1 < len(lines)
        and bool(line.strip())
        and (i == 0 or not lines[i - 1].strip())
        and not _MD_NOT_PARAGRAPH.match(line)
        and _MD_SETEXT.match(lines[i + 1]) is not None
    )


def _closes_fence(line: str, fence: str) -> bool:
    """A run of the fence's character, at least as long, indented less than 4 spaces."""
    mark = line.strip()
    return bool(mark) and set(mark) == {fence[0]} and len(mark) >= len(fence) and len(line) - len(line.lstrip(" ")) < 4


def rst_headings(text: str) -> tuple[Heading, ...]:
    lines, offsets = _lines(text)
    levels: dict[tuple[str, bool], int] = {}
    headings: list[Heading] = []
    for i, title, style in _rst_titles(lines):
        level = levels.setdefault(style, len(levels) + 1)
        headings.append((offsets[i], min(level, 6), _plain_rst(title)))
    return tuple(headings)


def _rst_titles(lines: list[str]) -> Iterator[tuple[int, str, tuple[str, bool]]]:
    """(first line index, title, (adornment char, has overline)) of each section title."""
    i, title_above = 0, True  # a title starts the file, follows a blank line or another title
    while i < len(lines) - 1:
        if not (title_above or not lines[i - 1].strip()):
            i += 1
            continue
        title_above = False
        line, below = lines[i], lines[i + 1]
        over = _RST_ADORNMENT.match(line)
        if over and i + 2 < len(lines) and below.strip() and not _RST_ADORNMENT.match(below):
            under = _RST_ADORNMENT.match(lines[i + 2])
            if under and under.group(1) == over.group(1):
                yield i, below.strip(), (over.group(1), True)
                i, title_above = i + 3, True
                continue
        under = _RST_ADORNMENT.match(below)
        if (
            under
            and not over
            and line.strip()
            and not line[0].isspace()
            and len(below.rstrip()) >= min(len(line.rstrip()), 4)
        ):
            yield i, line.strip(), (under.group(1), False)
            i, title_above = i + 2, True
            continue
        i += 1


def _plain_rst(title: str) -> str:
    """A title without inline markup: ``:mod:`abc` --- ABCs`` -> ``abc --- ABCs``."""
    return _RST_MARKUP.sub("", _RST_ROLE.sub(r"\1", title)).strip()
