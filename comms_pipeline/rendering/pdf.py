"""Letters as PDFs with WeasyPrint, rendered many at a time and split per letter.

One ``HTML(...).write_pdf()`` per letter spends most of its time on fixed costs (style
set-up, font subsetting), about 5 letters/s here. A :class:`LetterRenderer` keeps its parsed
stylesheet and font configuration, lays a chunk of letters out as *one* document (each
letter a ``<section>`` that starts a page group, so its page numbers restart at 1), finds each
letter's pages by the anchor its section leaves on every page it spans, writes the PDF once
and cuts it per letter with pypdf. If the anchors do not account for every page exactly
(a template that fights the frame), the chunk is rendered letter by letter instead, so a
letter can never carry another's page. :class:`LetterPool` runs renderers in several
processes.

Template HTML is data for the frame: it is re-serialised balanced (so it cannot close the
letter's section), without scripts, styles, or anything that would show on other pages, and
the URL fetcher only serves ``data:`` URLs and files of the letter layout folder.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import structlog

from comms_pipeline.core.errors import CommsError, MissingExtraError
from comms_pipeline.rendering.letter_words import base_language, page_of

log = structlog.get_logger(__name__)

LAYOUT_DIR = Path(__file__).resolve().parents[1] / "templates" / "letter_layout"
ANCHOR = "cp-letter-"
DEFAULT_CHUNK = 25


class LetterError(CommsError):
    """The letter could not be rendered."""


class RendererCrashed(CommsError):
    """A letter rendering process died; the letters of its batch are to be tried again."""


@dataclass(frozen=True)
class LetterContent:
    """One letter: who it goes to and its merged content (``body_html`` is template HTML)."""

    key: int
    recipient: str
    address: str
    subject: str
    body_html: str
    language: str | None = None
    date: str = ""
    reference: str | None = None


# -- template HTML as a balanced, inert fragment -----------------------------------------------

_DROP = frozenset({"script", "style", "title", "template", "iframe", "object", "embed",
                   "noscript", "noembed", "noframes", "plaintext", "xmp", "textarea",
                   "select", "head", "frameset", "frame", "applet", "dialog"})
_UNWRAP = frozenset({"html", "body", "base", "link", "meta"})
_VOID = frozenset({"area", "br", "col", "hr", "img", "input", "param", "source", "track",
                   "wbr"})
_ATTR_NAME = re.compile(r"^[a-z_][-a-z0-9_.:]*$")
_FLOATING_STYLE = re.compile(r"position\s*:\s*(fixed|running)|\bpage\s*:|string-set|bookmark-",
                             re.IGNORECASE)


class _FragmentCleaner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []
        self.dropping: str | None = None
        self.depth = 0

    def _attrs(self, attrs: list[tuple[str, str | None]]) -> str:
        kept = []
        for name, value in attrs:
            value = value or ""
            if (not _ATTR_NAME.match(name) or name.startswith("on")
                    or (name in ("id", "name") and value.startswith(ANCHOR))
                    or (name == "style" and _FLOATING_STYLE.search(value))):
                continue
            kept.append(f' {name}="{escape(value, quote=True)}"')
        return "".join(kept)

    def _dropped(self, tag: str, opening: bool) -> bool:
        if self.dropping is None:
            if opening and tag in _DROP:
                self.dropping, self.depth = tag, 1
                return True
            return False
        if tag == self.dropping:
            self.depth += 1 if opening else -1
            if self.depth == 0:
                self.dropping = None
        return True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._dropped(tag, True) or tag in _UNWRAP:
            return
        self.out.append(f"<{tag}{self._attrs(attrs)}>")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.dropping is not None or tag in _DROP or tag in _UNWRAP:
            return
        closing = "" if tag in _VOID else f"</{tag}>"
        self.out.append(f"<{tag}{self._attrs(attrs)}>{closing}")

    def handle_endtag(self, tag: str) -> None:
        if self._dropped(tag, False) or tag not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            self.out.append(f"</{top}>")
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.dropping is None:
            self.out.append(escape(data, quote=False))

    def result(self) -> str:
        self.close()
        self.out.extend(f"</{tag}>" for tag in reversed(self.stack))
        self.stack.clear()
        return "".join(self.out)


def clean_fragment(html: str) -> str:
    """Template HTML as a balanced fragment without active or page-level content."""
    cleaner = _FragmentCleaner()
    cleaner.feed(html)
    return cleaner.result()


# -- rendering -------------------------------------------------------------------------------

def _weasyprint() -> Any:
    try:
        import weasyprint
    except ImportError:
        raise MissingExtraError("weasyprint", "letters") from None
    return weasyprint


def _layout_fetcher() -> Any:
    """A URL fetcher that serves ``data:`` URLs and the layout folder's files, nothing else."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    from weasyprint.urls import URLFetcher

    root = LAYOUT_DIR

    class LayoutOnlyFetcher(URLFetcher):
        def fetch(self, url: str, headers: Any = None) -> Any:
            if url.startswith("data:"):
                return super().fetch(url, headers)
            if url.startswith("file:"):
                path = Path(url2pathname(urlsplit(url).path)).resolve()
                if path.is_relative_to(root) and path.is_file():
                    return super().fetch(url, headers)
            raise ValueError("letters may only use data: URLs and files of the letter layout")

    return LayoutOnlyFetcher(timeout=5)


class LetterRenderer:
    """Renders letters in chunks, reusing the parsed stylesheet and font configuration.

    Every page's footer says "Page N of M" in the letter's language; M is the letter's own
    page count, which CSS cannot give in a batch (``counter(pages)`` is the whole document's):
    each letter's pages are named after its language and page count (``letter-el-2``), first
    guessed as one page, and a letter that turned out longer is laid out again with its count
    (the footer is outside the page area, so the second layout has the same pages). Each PDF
    carries its metadata (title = subject, author = sender, language). With ``tagged``, letters
    are rendered one by one as tagged PDFs (WeasyPrint's ``pdf_tags``: headings, paragraphs
    and tables in the structure tree, for screen readers), since cutting a batch's PDF apart
    would leave its structure tree behind.
    """

    def __init__(self, sender: Sequence[str], chunk_size: int = DEFAULT_CHUNK,
                 tagged: bool = False) -> None:
        wp = _weasyprint()
        from weasyprint.text.fonts import FontConfiguration

        try:
            from pypdf import PdfReader, PdfWriter
        except ImportError:
            raise MissingExtraError("pypdf", "letters") from None
        self._wp, self._reader, self._writer = wp, PdfReader, PdfWriter
        self.chunk_size = 1 if tagged else max(1, chunk_size)
        self.tagged = tagged
        self.fetcher = _layout_fetcher()
        self.font_config = FontConfiguration()
        self.css = wp.CSS(filename=str(LAYOUT_DIR / "letter.css"), font_config=self.font_config,
                          url_fetcher=self.fetcher)
        self._page_css: dict[str, Any] = {}
        self.frame = (LAYOUT_DIR / "letter.html").read_text(encoding="utf-8")
        lines = [line for line in sender if line]
        self.author = lines[0] if lines else ""
        self.sender_html = "<br>".join(
            f'<span class="sender-name">{escape(line)}</span>' if i == 0 else escape(line)
            for i, line in enumerate(lines))
        self.return_line = escape(", ".join(lines))

    def render(self, letters: Sequence[LetterContent],
               keep_alive: Callable[[], object] | None = None) -> list[bytes | LetterError]:
        """One PDF (or the error) per letter, in order."""
        results: list[bytes | LetterError] = []
        for start in range(0, len(letters), self.chunk_size):
            results.extend(self._render_chunk(letters[start:start + self.chunk_size]))
            if keep_alive is not None:
                keep_alive()
        return results

    def _render_chunk(self, letters: Sequence[LetterContent]) -> list[bytes | LetterError]:
        if self.tagged:
            return [self._render_one(letter) for letter in letters]
        try:
            totals = [1] * len(letters)
            document = self._document(letters, totals)
            ranges = page_ranges([p.anchors for p in document.pages], len(letters))
            if ranges is not None:
                out = self._split(document.write_pdf(), ranges, letters)
                longer = [i for i, pages in enumerate(ranges) if len(pages) != totals[i]]
                for i in longer:  # laid out again, now knowing its page count
                    out[i] = self._render_one(letters[i], len(ranges[i]))
                return out
            log.warning("letters.chunk_fallback", count=len(letters), reason="page ranges")
        except Exception as exc:  # WeasyPrint raises anything: retry letter by letter
            log.warning("letters.chunk_fallback", count=len(letters),
                        reason=exc.__class__.__name__)
        return [self._render_one(letter) for letter in letters]

    def _render_one(self, letter: LetterContent, total: int = 1) -> bytes | LetterError:
        try:
            document = self._document([letter], [total])
            pages = len(document.pages)
            if pages != total:
                document = self._document([letter], [pages])
            return document.write_pdf(pdf_tags=self.tagged)
        except Exception as exc:  # one letter's failure is that letter's alone
            log.warning("letters.render_failed", key=letter.key, error=exc.__class__.__name__)
            return LetterError(f"the letter could not be rendered: {exc.__class__.__name__}: "
                               f"{str(exc)[:300]}")

    def _document(self, letters: Sequence[LetterContent], totals: Sequence[int]) -> Any:
        names = [page_name(letter.language, total) for letter, total in zip(
            letters, totals, strict=True)]
        sections = "".join(self._section(i, letter, name)
                           for i, (letter, name) in enumerate(zip(letters, names, strict=True)))
        head = '<meta charset="utf-8">'
        lang = ""
        if len(letters) == 1:  # WeasyPrint writes these as the PDF's metadata
            only = letters[0]
            head += (f"<title>{escape(only.subject)}</title>"
                     f'<meta name="author" content="{escape(self.author, quote=True)}">')
            lang = f' lang="{escape(only.language or "en", quote=True)}"'
        html = (f"<!DOCTYPE html><html{lang}><head>{head}</head><body>"
                f"{sections}</body></html>")
        return self._wp.HTML(string=html, base_url=LAYOUT_DIR.as_uri() + "/",
                             url_fetcher=self.fetcher).render(
            stylesheets=[self.css, self._pages_stylesheet(names)],
            font_config=self.font_config)

    def _pages_stylesheet(self, names: Sequence[str]) -> Any:
        """The footer and the page-number restart of each named kind of letter page."""
        key = " ".join(sorted(set(names)))
        found = self._page_css.get(key)
        if found is None:
            if len(self._page_css) > 256:
                self._page_css.clear()
            found = self._page_css[key] = self._wp.CSS(
                string="\n".join(page_rules(name) for name in sorted(set(names))),
                font_config=self.font_config, url_fetcher=self.fetcher)
        return found

    def _section(self, index: int, letter: LetterContent, name: str | None = None) -> str:
        name = name or page_name(letter.language, 1)
        lines = [letter.recipient, *address_lines(letter.address)]
        reference = (f'<br><span class="reference">{escape(letter.reference)}</span>'
                     if letter.reference else "")
        return self.frame.format(
            anchor=f"{ANCHOR}{index}", lang=escape(letter.language or "en", quote=True),
            page_name=name, sender=self.sender_html, return_line=self.return_line,
            recipient="<br>".join(escape(line) for line in lines if line),
            date=escape(letter.date), reference=reference, subject=escape(letter.subject),
            body=clean_fragment(letter.body_html))

    def _split(self, pdf: bytes, ranges: list[list[int]],
               letters: Sequence[LetterContent]) -> list[bytes | LetterError]:
        from pypdf.generic import NameObject, TextStringObject

        reader = self._reader(io.BytesIO(pdf))
        out: list[bytes | LetterError] = []
        for pages, letter in zip(ranges, letters, strict=True):
            writer = self._writer()
            for n in pages:
                writer.add_page(reader.pages[n])
            writer.add_metadata({"/Title": letter.subject, "/Author": self.author,
                                 "/Producer": "comms-pipeline"})
            writer.root_object[NameObject("/Lang")] = TextStringObject(
                letter.language or "en")
            buffer = io.BytesIO()
            writer.write(buffer)
            out.append(buffer.getvalue())
        return out


_PAGE_NAME_LANGUAGE = re.compile(r"[^a-z]")


def page_name(language: str | None, total: int) -> str:
    """The CSS page name of the pages of a letter in ``language`` of ``total`` pages."""
    code = _PAGE_NAME_LANGUAGE.sub("", base_language(language))[:8] or "en"
    return f"letter-{code}-{max(1, int(total))}"


def page_rules(name: str) -> str:
    """``@page`` rules of one page name: the localised "Page N of M" and the restart at 1."""
    _, code, total = name.split("-")
    before, _, after = page_of(code).replace("{m}", total).partition("{n}")

    def css_string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (f"@page {name} {{ @bottom-right {{ content: {css_string(before)} counter(page) "
            f"{css_string(after)}; }} }}\n"
            f"@page {name}:nth(1 of {name}) {{ counter-set: page 1; }}")


def address_lines(address: str) -> list[str]:
    """A postal address as lines: its own line breaks, else its commas."""
    text = (address or "").replace("\r", "\n")
    parts = text.split("\n") if "\n" in text else text.split(",")
    return [" ".join(p.split()) for p in parts if p.strip()]


def page_ranges(anchors: Sequence[dict[str, Any]], count: int) -> list[list[int]] | None:
    """Each letter's page numbers, from the letter anchors found on each page.

    ``None`` unless every page shows exactly one letter (or continues the previous one), the
    letters come in order, and every letter has at least one page.
    """
    ranges: list[list[int]] = [[] for _ in range(count)]
    current: int | None = None
    for number, page_anchors in enumerate(anchors):
        found = {name for name in page_anchors if name.startswith(ANCHOR)}
        if len(found) > 1:
            return None
        if found:
            suffix = found.pop()[len(ANCHOR):]
            if not suffix.isdigit() or int(suffix) >= count:
                return None
            index = int(suffix)
            if index != current and (ranges[index] or (current is not None and index < current)):
                return None
            current = index
        elif current is None:
            return None
        ranges[current].append(number)
    return ranges if all(ranges) else None


# -- several processes ---------------------------------------------------------------------------

_worker_renderer: LetterRenderer | None = None


def _init_worker(sender: Sequence[str], chunk_size: int, tagged: bool = False) -> None:
    global _worker_renderer
    _worker_renderer = LetterRenderer(sender, chunk_size, tagged)


def _ready() -> bool:
    return _worker_renderer is not None


def _render_in_worker(letters: Sequence[LetterContent]) -> list[bytes | LetterError]:
    assert _worker_renderer is not None, "worker not initialised"
    return _worker_renderer.render(letters)


class LetterPool:
    """Letter rendering in this process (``processes=1``) or in a pool of worker processes.

    Workers come from a *forkserver* (WeasyPrint preloaded there): they start clean, with no
    database connection or thread inherited from a job that may run inside a scheduler, and
    each builds its own renderer once and keeps it for the pool's lifetime.
    """

    def __init__(self, sender: Sequence[str], processes: int = 1,
                 chunk_size: int = DEFAULT_CHUNK, tagged: bool = False) -> None:
        self.processes = max(1, processes)
        self.chunk_size = max(1, chunk_size)
        self.tagged = tagged
        self.sender = list(sender)
        self._local: LetterRenderer | None = None
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now, so that they load while the caller prepares its batch."""
        if self.processes > 1 and self._executor is None:
            context = multiprocessing.get_context("forkserver")
            # Imported once in the fork server, so every worker starts with them loaded.
            context.set_forkserver_preload(["weasyprint", "pypdf", __name__])
            self._executor = ProcessPoolExecutor(
                self.processes, mp_context=context,
                initializer=_init_worker, initargs=(self.sender, self.chunk_size, self.tagged))
            for _ in range(self.processes):
                self._executor.submit(_ready)

    def render(self, letters: Sequence[LetterContent],
               keep_alive: Callable[[], object] | None = None) -> list[bytes | LetterError]:
        if not letters:
            return []
        if self.processes == 1:
            if self._local is None:
                self._local = LetterRenderer(self.sender, self.chunk_size, self.tagged)
            return self._local.render(letters, keep_alive)
        self.start()
        assert self._executor is not None
        pieces = max(self.processes, math.ceil(len(letters) / self.chunk_size))
        size = math.ceil(len(letters) / pieces)
        results: list[bytes | LetterError] = []
        try:
            # ``submit`` itself raises once the pool has noticed a dead worker.
            futures = [self._executor.submit(_render_in_worker, letters[i:i + size])
                       for i in range(0, len(letters), size)]
            for future in futures:
                results.extend(future.result())
                if keep_alive is not None:
                    keep_alive()
        except BrokenProcessPool as exc:
            log.error("letters.worker_died", processes=self.processes)
            self.close()  # the next batch starts a fresh pool
            raise RendererCrashed(f"a letter rendering process died: {exc}") from None
        return results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._local = None
