"""Loaders: one document's bytes to a LoadedDocument (plain text plus headings), chosen by file type.

``LOADERS`` maps a suffix to its loader, a function ``(doc_id, data, max_bytes) -> LoadedDocument``
that raises DocumentError (what is wrong, how to fix it) for a document it cannot read.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from types import MappingProxyType

from ..errors import DocumentError
from ..paths import suffix_of
from ..types import LoadedDocument, RawDocument
from .htmltext import load_html
from .markup import load_markdown, load_rst
from .office import load_docx
from .pdf import load_pdf
from .text import load_plain, load_python

Loader = Callable[[str, bytes, int], LoadedDocument]

_CODE = (
    ".js .ts .tsx .jsx .java .c .h .cpp .hpp .cc .go .rs .rb .php .sh .bash .sql .css .scss .json "
    ".yaml .yml .toml .ini .cfg .xml .kt .swift .scala .r .lua .pl .cs"
).split()

LOADERS: MappingProxyType[str, Loader] = MappingProxyType(
    {
        ".txt": load_plain,
        ".md": load_markdown,
        ".markdown": load_markdown,
        ".rst": load_rst,
        ".html": load_html,
        ".htm": load_html,
        ".xhtml": load_html,
        ".pdf": load_pdf,
        ".docx": load_docx,
        ".py": load_python,
        **{suffix: load_plain for suffix in _CODE},
    }
)
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(LOADERS)

# "faq/general.rst.txt" is reStructuredText saved with a .txt name (as in Sphinx's _sources).
_TEXT_WRAPPED = {".rst": ".rst", ".md": ".md", ".markdown": ".md"}


def effective_suffix(doc_id: str) -> str:
    """The file type that decides the loader: ``"a/b.rst.txt" -> ".rst"``, ``"a.md.txt" -> ".md"``,
    otherwise the plain lower-case suffix (``""`` if none)."""
    suffix = suffix_of(doc_id)
    if suffix == ".txt":
        inner = suffix_of(posixpath.splitext(doc_id.split("?", 1)[0].rstrip("/"))[0])
        return _TEXT_WRAPPED.get(inner, suffix)
    return suffix


def load_document(raw: RawDocument, max_bytes: int) -> LoadedDocument:
    """Turn a fetched document into text and headings; DocumentError if it is too big, unsupported or unreadable."""
    if len(raw.data) > max_bytes:
        raise DocumentError(
            f"{raw.doc_id} is {len(raw.data):,} bytes, more than the limit of {max_bytes:,} bytes; "
            "raise sources.max_file_bytes in the config or remove the file"
        )
    suffix = _suffix(raw)
    loader = LOADERS.get(suffix)
    if loader is None:
        raise DocumentError(
            f"{raw.doc_id}: file type '{suffix or '(none)'}' is not supported; "
            f"supported: {' '.join(sorted(SUPPORTED_SUFFIXES))} — convert the file or add it to sources.folder.ignore"
        )
    return loader(raw.doc_id, raw.data, max_bytes)


def _suffix(raw: RawDocument) -> str:
    """The source's suffix, refined from the doc id when they agree (``.txt`` -> ``.rst`` for ``x.rst.txt``)."""
    given = raw.suffix.lower()
    if not given or given == suffix_of(raw.doc_id):
        return effective_suffix(raw.doc_id)
    return given
