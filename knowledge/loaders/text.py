"""Bytes to text for every text-like format: BOMs, UTF-8, a detected legacy encoding; binary refused.

Also the loaders of plain text and source code, whose ``text`` is the decoded file itself (only
``\\r\\n`` becomes ``\\n``), so chunk offsets map straight back to the file.
"""

from __future__ import annotations

import codecs
import re

from ..errors import DocumentError
from ..types import LoadedDocument

# Longest BOM first: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 and C1 control characters other than tab, newline, vertical tab, form feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_MAX_CONTROL_SHARE = 0.05  # random bytes decoded as a single-byte charset give about 12 %
_BINARY_FIX = (
    "if it is a document in another format, give it that format's extension; "
    "if it is UTF-16 text without a byte-order mark, save it as UTF-8; "
    "otherwise remove it or add it to sources.folder.ignore"
)
_PY_DEF = re.compile(r"^(?:async[ \t]+def|def|class)[ \t]+(\w+)", re.MULTILINE)


def decode_text(data: bytes, doc_id: str, declared: str | None = None) -> str:
    """Decode a text file: a BOM wins, then ``declared`` (e.g. an HTML meta charset), then UTF-8,
    then the encoding charset-normalizer detects. Newlines ``\\r\\n`` become ``\\n``.

    Raises DocumentError when the bytes look binary or the text is empty.
    """
    if not data:
        raise empty_error(doc_id)
    text = _decode_bom(data, doc_id)
    if text is None:
        if b"\x00" in data:
            raise binary_error(doc_id, "it contains NUL bytes")
        text = _decode_declared(data, declared) or _decode_utf8(data) or _decode_detected(data, doc_id)
    text = text.replace("\r\n", "\n")
    if len(_CONTROL.findall(text)) > _MAX_CONTROL_SHARE * len(text):
        raise binary_error(doc_id, "it is full of control characters")
    if not text.strip():
        raise empty_error(doc_id)
    return text


def empty_error(doc_id: str) -> DocumentError:
    return DocumentError(f"{doc_id} is empty; add text or remove it")


def binary_error(doc_id: str, why: str) -> DocumentError:
    return DocumentError(f"{doc_id} looks like binary data, not text ({why}): {_BINARY_FIX}")


def _decode_bom(data: bytes, doc_id: str) -> str | None:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise DocumentError(
                    f"{doc_id} starts with a {codec.upper()} byte-order mark but is not valid {codec.upper()} "
                    f"({exc.reason} at byte {exc.start}); re-save it as UTF-8"
                ) from None
    return None


def _decode_declared(data: bytes, declared: str | None) -> str | None:
    if not declared:
        return None
    try:
        return data.decode(declared)
    except (LookupError, UnicodeDecodeError):
        return None  # a wrong or unknown declaration: fall back to detection


def _decode_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_detected(data: bytes, doc_id: str) -> str:
    import charset_normalizer

    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise binary_error(doc_id, "it is not UTF-8 and no text encoding fits it")
    return str(best)


def load_plain(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    """Plain text (and code without structure we know): the decoded text, no headings."""
    return LoadedDocument(doc_id=doc_id, text=decode_text(data, doc_id))


def load_python(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    """Python source: top-level ``def``/``class`` (with their decorators) are level-1 headings."""
    text = decode_text(data, doc_id)
    return LoadedDocument(doc_id=doc_id, text=text, headings=python_headings(text))


def python_headings(text: str) -> tuple[tuple[int, int, str], ...]:
    """(offset, 1, "def name" / "class Name") for each top-level definition, offset at its first decorator."""
    headings = []
    for m in _PY_DEF.finditer(text):
        kind = "class" if m.group(0).startswith("class") else "def"
        headings.append((_decorated_start(text, m.start()), 1, f"{kind} {m.group(1)}"))
    return tuple(headings)


def _decorated_start(text: str, start: int) -> int:
    """Move a definition's line start up over the ``@decorator`` lines right above it."""
    while start > 0:
        previous = text.rfind("\n", 0, start - 1) + 1
        if not text.startswith("@", previous):
            break
        start = previous
    return start
