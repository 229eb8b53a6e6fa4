"""PDF to text with pypdf: the text layer of each page, pages separated by a blank line.

PDFs carry no reliable heading structure, so a PDF has no headings; scanned PDFs (no text layer)
are refused with a hint to run OCR first.

A hostile PDF can make text extraction run for hours from a few kilobytes: one content stream
shared by thousands of pages, or a form drawn thousands of times (pypdf re-parses it each time).
pypdf bounds each stream; this loader bounds the whole document: the content operators executed
(at most OPS_PER_BYTE per byte of the file, and never fewer than MIN_OPS allowed) and the text
extracted (at most ``max_bytes`` characters, the file-size limit).
"""

from __future__ import annotations

import io
import re

from ..errors import DocumentError
from ..types import LoadedDocument

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keeps tab and newline
MIN_OPS = 200_000  # about 6 s of pypdf's text extraction here; real documents use ~0.5 operator per file byte
OPS_PER_BYTE = 10


class _OverBudget(BaseException):
    """Stops pypdf mid-page (a BaseException: pypdf swallows ``Exception`` raised inside forms)."""


def load_pdf(doc_id: str, data: bytes, max_bytes: int) -> LoadedDocument:
    pages = [page for page in _page_texts(doc_id, data, max_bytes) if page]
    if not pages:
        raise DocumentError(
            f"{doc_id} has no text layer (a scanned PDF?); run OCR on it first (e.g. `ocrmypdf in.pdf out.pdf`) "
            "or remove it"
        )
    return LoadedDocument(doc_id=doc_id, text="\n\n".join(pages))


def _page_texts(doc_id: str, data: bytes, max_bytes: int) -> list[str]:
    from pypdf import PdfReader

    budget = max(MIN_OPS, OPS_PER_BYTE * len(data))
    used = 0

    def count(*_args) -> None:
        nonlocal used
        used += 1
        if used > budget:
            raise _OverBudget

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{doc_id} is password-protected; save an unprotected copy to index it")
        texts, length = [], 0
        for page in reader.pages:
            texts.append(_clean(page.extract_text(visitor_operand_before=count) or ""))
            length += len(texts[-1])
            if length > max_bytes:
                raise DocumentError(
                    f"{doc_id} holds more than {max_bytes:,} characters of text (sources.max_file_bytes): refused "
                    "as a possible PDF bomb; split the PDF or raise sources.max_file_bytes if it is genuine")
        return texts
    except _OverBudget:
        raise DocumentError(
            f"{doc_id} needs more than {budget:,} drawing operations to extract its text ({OPS_PER_BYTE} per byte "
            "of the file): refused as a possible PDF bomb (a tiny file that expands to hours of work); "
            "re-export it as PDF, or save it as text") from None
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
