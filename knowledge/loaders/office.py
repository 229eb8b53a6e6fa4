"""Word .docx to text with python-docx: paragraphs and table rows in document order.

Paragraphs styled "Title" or "Heading N" are headings (Title = level 1). A .docx is a zip file:
its declared uncompressed sizes are checked before parsing, so a zip bomb is refused unopened
(Python's zipfile never inflates a member past its declared size, and a member that holds more
fails its CRC check). The XML parts, which become element trees in memory, may unpack to at most
``max_bytes`` (sources.max_file_bytes); all parts together to MAX_EXPANSION times that.
"""

from __future__ import annotations

import io
import re
import zipfile

from ..errors import DocumentError
from ..types import LoadedDocument
from .text import empty_error

MAX_EXPANSION = 20  # a .docx may unpack to at most this many times sources.max_file_bytes
_HEADING_STYLE = re.compile(r"Heading ([1-9])")


def load_docx(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    check_zip_size(doc_id, data, MAX_EXPANSION * max_bytes, xml_limit=max_bytes)
    blocks = _docx_blocks(doc_id, data)
    parts: list[str] = []
    headings: list[tuple[int, int, str]] = []
    at = 0
    for text, level in blocks:
        if parts:
            at += 2  # the "\n\n" between blocks
        if level:
            headings.append((at, level, " ".join(text.split())))
        parts.append(text)
        at += len(text)
    if not parts:
        raise empty_error(doc_id)
    return LoadedDocument(doc_id=doc_id, text="\n\n".join(parts), headings=tuple(headings))


def check_zip_size(doc_id: str, data: bytes, limit: int, xml_limit: int | None = None) -> None:
    """Refuse a zip whose members declare more than ``limit`` bytes in total, or whose ``.xml``/``.rels``
    members more than ``xml_limit``, before inflating any."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            total = sum(info.file_size for info in members)
            xml = sum(info.file_size for info in members if info.filename.lower().endswith((".xml", ".rels")))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentError(
            f"{doc_id} is not a valid .docx (not a readable zip file: {exc}); re-save it from your word processor"
        ) from None
    if total > limit:
        raise DocumentError(
            f"{doc_id} unpacks to {total:,} bytes, more than {MAX_EXPANSION}× sources.max_file_bytes "
            f"({limit:,} bytes): refused as a possible zip bomb; raise sources.max_file_bytes if the file is genuine"
        )
    if xml_limit is not None and xml > xml_limit:
        raise DocumentError(
            f"{doc_id} holds {xml:,} bytes of XML once unpacked, more than sources.max_file_bytes ({xml_limit:,} "
            "bytes): refused as a possible zip bomb; split the document or raise sources.max_file_bytes if genuine"
        )


def _docx_blocks(doc_id: str, data: bytes) -> list[tuple[str, int]]:
    """(text, heading level or 0) of each non-empty paragraph and table row, in document order."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        levels = _heading_levels(document)
        blocks = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                blocks.extend((row, 0) for row in _table_rows(item))
            elif text := item.text.strip():
                blocks.append((text, levels.get(item._p.style, levels.get(None, 0))))
        return blocks
    except Exception as exc:  # python-docx/lxml raise many types on damaged files; this document fails only
        raise DocumentError(
            f"{doc_id} could not be read as a Word document ({type(exc).__name__}: {exc}); "
            "re-save it as .docx (old binary .doc files are not supported)"
        ) from None


def _table_rows(table) -> list[str]:
    rows = []
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:
            if cell._tc is not previous and cell.text.strip():  # a merged cell repeats across its span
                cells.append(" ".join(cell.text.split()))
            previous = cell._tc
        if cells:
            rows.append(" | ".join(cells))
    return rows


def _heading_levels(document) -> dict[str | None, int]:
    """Heading level of each paragraph style id (None: the default style, also used for unknown ids), found once:
    python-docx's ``paragraph.style`` scans every style on each call (minutes on a long document)."""
    from docx.enum.style import WD_STYLE_TYPE

    levels: dict[str | None, int] = {}
    for style in document.styles:
        if style.type == WD_STYLE_TYPE.PARAGRAPH:
            levels[style.style_id] = _heading_level(style.name or "")
            if style.element.default:  # the last default wins, as in Word
                levels[None] = levels[style.style_id]
    return levels


def _heading_level(name: str) -> int:
    if name == "Title":
        return 1
    m = _HEADING_STYLE.fullmatch(name)
    return min(int(m.group(1)), 6) if m else 0
