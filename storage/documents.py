"""Documents beyond plain text: PDF, HTML and DOCX turned into the text the knowledge base chunks, with where
each piece came from (a PDF's page; a heading of HTML and DOCX, written as a markdown heading so the chunker
keeps it as the chunk's heading).

PDF through pypdf (pure Python, no dependency of its own), DOCX through python-docx (lxml), HTML through the
standard library's parser (headings, paragraphs, list items and table cells; scripts and styles dropped).
Conversion never quotes the document in an error.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

PLAIN: Final = "text/plain"
MARKDOWN: Final = "text/markdown"
HTML: Final = "text/html"
PDF: Final = "application/pdf"
DOCX: Final = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT_TYPES: Final = frozenset({PLAIN, MARKDOWN, HTML})
"""Types whose content is UTF-8 text (in ``Document.text``, or as bytes in ``Document.content``)."""
BINARY_TYPES: Final = frozenset({PDF, DOCX})
MEDIA_TYPES: Final = TEXT_TYPES | BINARY_TYPES


class UnreadableDocument(Exception):
    """The document's bytes cannot be read as its media type says (the message never quotes them)."""


@dataclass(frozen=True, slots=True)
class Section:
    """A part of a converted document: its text, whether that text is markdown (headings name its chunks),
    and where it is in the document (``"page 3"``; empty: the whole document)."""

    text: str
    markdown: bool
    location: str = ""


def convert(media_type: str, text: str, content: bytes) -> list[Section]:
    """The sections of a document of ``media_type`` (one of :data:`MEDIA_TYPES`) given as ``text`` or, for any
    type, as ``content`` bytes. Raises :class:`UnreadableDocument`."""
    if media_type in TEXT_TYPES and content:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise UnreadableDocument("the content is not UTF-8 text") from None
    if media_type == PLAIN:
        return [Section(text, markdown=False)]
    if media_type == MARKDOWN:
        return [Section(text, markdown=True)]
    if media_type == HTML:
        return [Section(html_to_markdown(text), markdown=True)]
    if media_type == PDF:
        return pdf_pages(content)
    if media_type == DOCX:
        return [Section(docx_to_markdown(content), markdown=True)]
    raise ValueError(f"not a supported media type: {media_type}")


def pdf_pages(content: bytes) -> list[Section]:
    """One section per PDF page with text (``"page N"``, from 1)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            raise UnreadableDocument("the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except UnreadableDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        # pypdf raises its own errors for most damage, and plain ones for some malformed objects.
        raise UnreadableDocument("the PDF cannot be parsed") from exc
    return [Section(_tidy(t), markdown=False, location=f"page {n}") for n, t in enumerate(pages, 1) if t.strip()]


_DOCX_HEADING: Final = re.compile(r"^Heading (\d)$")


def docx_to_markdown(content: bytes) -> str:
    """A DOCX's paragraphs and tables as markdown: the styles "Title" and "Heading N" become headings."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(content))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UnreadableDocument("the DOCX cannot be parsed") from exc
    # Style names by id, read once: ``paragraph.style`` looks the default style up anew on every paragraph
    # (measured: 4 ms a paragraph, seconds for a few hundred).
    names = {style.style_id: style.name or "" for style in document.styles if style.style_id}
    lines: list[str] = []
    for paragraph in document.paragraphs:
        words = paragraph.text.strip()
        if not words:
            continue
        style_id = paragraph._p.style  # the paragraph's own style id; None: the document's default
        style = names.get(style_id, "") if style_id else ""
        level = 1 if style == "Title" else int(m.group(1)) if (m := _DOCX_HEADING.match(style)) else 0
        lines.append(f"{'#' * level} {words}" if level else words)
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                lines.append(" | ".join(cells))
    return "\n\n".join(lines)


_HEADINGS: Final = {f"h{n}": n for n in range(1, 7)}
_BLOCKS: Final = frozenset({"p", "div", "li", "tr", "br", "section", "article", "blockquote", "pre", "td", "th"})
_SKIPPED: Final = frozenset({"script", "style", "noscript", "template", "head", "svg"})


class _MarkdownWriter(HTMLParser):
    """Collects an HTML page's text as markdown blocks: headings as ``#`` lines, other blocks as paragraphs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._current: list[str] = []
        self._heading = 0
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skipping += 1
        elif tag in _HEADINGS:
            self._flush()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in _HEADINGS or tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._current.append(data)

    def close(self) -> None:
        super().close()
        self._flush()

    def _flush(self) -> None:
        words = " ".join("".join(self._current).split())
        self._current = []
        if words:
            self.blocks.append(f"{'#' * self._heading} {words}" if self._heading else words)
        self._heading = 0


def html_to_markdown(text: str) -> str:
    """An HTML page's visible text as markdown (see :class:`_MarkdownWriter`)."""
    writer = _MarkdownWriter()
    writer.feed(text)
    writer.close()
    return "\n\n".join(writer.blocks)


def _tidy(text: str) -> str:
    # PDF text extraction leaves trailing spaces and runs of blank lines; paragraphs are what the chunker needs.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
