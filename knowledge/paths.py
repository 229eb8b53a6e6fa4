"""Small helpers about document ids that look like paths."""

from __future__ import annotations

import posixpath


def suffix_of(doc_id: str) -> str:
    """The lower-case file type of a document id: ``"notes/a.MD" -> ".md"``; ``""`` if none."""
    base = posixpath.basename(doc_id.split("?", 1)[0].rstrip("/"))
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def title_of(doc_id: str) -> str:
    """A readable title from a document id: ``"notes/marie-curie.md" -> "marie curie"``."""
    base = posixpath.basename(doc_id.split("?", 1)[0].rstrip("/"))
    stem = base.split(".", 1)[0] if not base.startswith(".") else base
    return " ".join(stem.replace("_", " ").replace("-", " ").split())
