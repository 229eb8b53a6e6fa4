"""PDF to text with pypdf: the text layer of each page, pages separated by a blank line.

PDFs carry no reliable heading structure, so a PDF has no headings; scanned PDFs (no text layer)
are refused with a hint to run OCR first.
"""

from __future__ import annotations

import io
import re

from ..errors import DocumentError
from ..types import LoadedDocument

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keeps tab and newline


def load_pdf(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    pages = [page for page in _page_texts(doc_id, data) if page]
    if not pages:
        raise DocumentError(
            f"{doc_id} has no text layer (a scanned PDF?); run OCR on it first (e.g. `ocrmypdf in.pdf out.pdf`) "
            "or remove it"
        )
    return LoadedDocument(doc_id=doc_id, text="\n\n".join(pages))


def _page_texts(doc_id: str, data: bytes) -> list[str]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{doc_id} is password-protected; save an unprotected copy to index it")
        return [_clean(page.extract_text() or "") for page in reader.pages]
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; this document fails, the sync goes on
        raise DocumentError(
            f"{doc_id} could not be read as a PDF ({type(exc).__name__}: {exc}); "
            "check that the file is complete, or re-export it as PDF"
        ) from None


def _clean(page: str) -> str:
    page = page.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(" ", page).strip()
