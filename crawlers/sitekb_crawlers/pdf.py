"""PDF text for the knowledge base, when the pypdf package is installed.

:func:`pdf_text` turns the bytes of a PDF into plain text with a title line
(``# Title``), which the crawler stores in ``sitekb.pages.body`` with content
type ``application/pdf``; the extract stage wraps it into a document as is.
A PDF may reserve its text with a ``tdm-reservation`` entry in its document
information (TDMRep); :func:`pdf_text` returns that value too.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

try:  # optional: without pypdf, PDFs are skipped as an unsupported content type
    import pypdf
    from pypdf.errors import PdfReadError, PyPdfError
except ImportError:  # pragma: no cover - pypdf is a dependency of sitekb
    pypdf = None

MAX_PAGES = 500  # a 10,000-page PDF is a data dump, not a page of the site


class PdfUnreadable(ValueError):
    """The bytes are not a PDF pypdf can read (broken, encrypted, truncated)."""


@dataclass(frozen=True)
class PdfText:
    title: str | None
    text: str
    pages: int
    tdm_reservation: str | None = None

    def as_markdown(self) -> str:
        heading = f"# {self.title}\n\n" if self.title else ""
        return heading + self.text


def available() -> bool:
    return pypdf is not None


def pdf_text(data: bytes) -> PdfText:
    """Text of a PDF, page by page; PdfUnreadable when it cannot be read."""
    if pypdf is None:
        raise PdfUnreadable("the pypdf package is not installed")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise PdfUnreadable("the PDF is encrypted")
        pages = []
        for page in reader.pages[:MAX_PAGES]:
            pages.append(_tidy(page.extract_text() or ""))
        info = reader.metadata or {}
        title = _tidy(str(info.get("/Title") or "")) or None
        reservation = info.get("/tdm-reservation") or info.get("/TDMReservation")
    except PdfUnreadable:
        raise
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise PdfUnreadable(f"unreadable PDF: {exc}") from exc
    text = "\n\n".join(p for p in pages if p)
    return PdfText(title=title, text=text, pages=len(reader.pages),
                   tdm_reservation=str(reservation).strip() if reservation is not None else None)


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
