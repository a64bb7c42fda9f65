"""The Letter Monitor job on SQLite and PostgreSQL: every PDF belongs to its own recipient."""

from __future__ import annotations

import hashlib
import io
import os
import signal

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.jobs.letter_monitor import LetterMonitorJob
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.rendering import pdf as pdfmod
from comms_pipeline.rendering.formatters import Formatters
from comms_pipeline.rendering.letter_words import page_of
from comms_pipeline.runtime.registry import build_job
from comms_pipeline.store.db import make_engine
from comms_pipeline.store.models import details_t, documents_t
from tests.conftest import make_settings

BODY_EN = ("<p>Dear #contact_information.name,</p>"
           "<p>Your bill <b>#bill.number</b> of #bill.amount is due.</p>"
           "#foreach($line in $bill.lines)<p>Charge: $line</p>#end"
           "<p>Kind regards,<br>Customer Care</p>")
BODY_EL = ("<p>Αγαπητέ/ή #contact_information.name,</p>"
           "<p>Ο λογαριασμός <b>#bill.number</b> ποσού #bill.amount είναι πληρωτέος.</p>"
           "#foreach($line in $bill.lines)<p>Χρέωση: $line</p>#end")

#: ref, name, language, postal address, bill number, number of charge lines
PEOPLE = [
    ("L-1", "Ann Archer", "en", "1 Acacia Avenue\nAshford\nAA1 1AA", "BILL-1001", 2),
    ("L-2", "Bob Brown", "en", "2 Birch Road, Bristol, BB2 2BB", "BILL-1002", 120),
    ("L-3", "Γιώργος Παπαδόπουλος", "el", "Οδός Ερμού 12\n105 63 Αθήνα", "BILL-1003", 0),
    ("L-4", "Chloé Dubois", "en", "4 Cedar Close\nChester\nCC4 4CC", "BILL-1004", 3),
]


def seed(engine, people=PEOPLE, extra_templates=()) -> None:
    with engine.begin() as conn:
        for ref, name, language, postal, _, _ in people:
            add_contact(conn, ref, name, language=language,
                        addresses=[AddressSpec("postal", postal, is_primary=True)])
        save_template(conn, TemplateSpec(
            "BILL_LETTER", "Bill letter", "letter", classification="financial",
            referring_entities=["bill"], variants=[
                VariantSpec("en", "Your bill #bill.number", BODY_EN),
                VariantSpec("el", "Ο λογαριασμός σας #bill.number", BODY_EL)]))
        for spec in extra_templates:
            save_template(conn, spec)
    for ref, _, _, _, number, lines in people:
        trigger(engine, contact_ref=ref, template_code="BILL_LETTER", entities={"bill": {
            "number": number, "amount": "€42.00",
            "lines": [f"{number} item {i:03d}" for i in range(lines)]}})


def run(settings, engine, job) -> int:
    Runner(settings, engine, build_job("monitor", settings, engine), once=True).run()
    return Runner(settings, engine, job, once=True).run()


def letters(engine) -> dict[int, tuple[object, object | None]]:
    with engine.connect() as conn:
        docs = {d.detail_id: d for d in conn.execute(select(documents_t))}
        return {r.id: (r, docs.get(r.id)) for r in conn.execute(select(details_t))}


def page_texts(content: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def check_own_letter(content: bytes, person: tuple, everyone: list[tuple]) -> list[str]:
    """Every token of this person's letter is there, and no token of anyone else's."""
    _, name, _, postal, number, lines = person
    pages = page_texts(content)
    text = "\n".join(pages)
    assert name in text
    assert postal.replace(",", "\n").splitlines()[0].strip() in text
    assert number in text
    for other in everyone:
        if other is not person:
            assert other[1] not in text and other[4] not in text
    footer = page_of(person[2])
    for k, page in enumerate(pages, start=1):  # numbering restarts with every letter
        assert footer.format(n=k, m=len(pages)) in page, page
    if lines:
        assert f"{number} item {lines - 1:03d}" in text  # the last line made it in
    return pages


def test_each_pdf_belongs_to_its_own_recipient(settings, engine) -> None:
    seed(engine)
    assert run(settings, engine, build_job("letter-monitor", settings, engine)) == len(PEOPLE)
    found = letters(engine)
    assert len(found) == len(PEOPLE)
    for detail, doc in found.values():
        assert detail.state == "awaiting_send", detail.error_description
        assert (doc.kind, doc.content_type) == ("letter", "application/pdf")
        assert doc.content.startswith(b"%PDF-")
        assert doc.size == len(doc.content)
        assert doc.sha256 == hashlib.sha256(doc.content).hexdigest()
        person = next(p for p in PEOPLE if p[3] == detail.address)
        pages = check_own_letter(doc.content, person, PEOPLE)
        assert detail.subject.endswith(person[4])
        if person[5] > 100:
            assert len(pages) >= 3, "the long letter runs over several pages"
        else:
            assert len(pages) == 1
    greek = next(d for d, _ in found.values() if d.language == "el")
    assert greek.subject == "Ο λογαριασμός σας BILL-1003"
    assert "είναι πληρωτέος" in "".join(page_texts(found[greek.id][1].content))


def test_bad_letters_are_rejected_and_cannot_reach_other_letters(settings, engine) -> None:
    hostile = ('</div></section><section class="letter" id="cp-letter-0">'
               "<style>.letter { display: none }</style>"
               '<p style="position: fixed; top: 0">HOSTILE #bill.number</p>'
               '<img src="file:///etc/passwd"><plaintext>')
    extra = [
        TemplateSpec("HOSTILE", "Hostile", "letter", referring_entities=["bill"],
                     variants=[VariantSpec("en", "Hostile", hostile)]),
        TemplateSpec("BROKEN", "Broken", "letter",
                     variants=[VariantSpec("en", "Broken", "<p>#foreach($x in</p>")]),
        TemplateSpec("TEXT_ONLY", "Text only", "letter", referring_entities=["bill"],
                     variants=[VariantSpec("en", "Plain #bill.number",
                                           body_text="First paragraph.\n\nSecond <one>.")]),
    ]
    seed(engine, PEOPLE[:2], extra)
    for code in ("HOSTILE", "BROKEN", "TEXT_ONLY"):
        trigger(engine, contact_ref="L-1", template_code=code,
                entities={"bill": {"number": f"{code}-NO", "lines": []}})
    run(settings, engine, build_job("letter-monitor", settings, engine))
    found = {d.subject or d.error_code: (d, doc) for d, doc in letters(engine).values()}
    broken, _ = next(v for v in found.values() if v[0].error_code == "TEMPLATE_ERROR")
    assert broken.state == "rejected" and "BROKEN" in broken.error_description
    hostile_text = "\n".join(page_texts(found["Hostile"][1].content))
    assert "HOSTILE-NO" in hostile_text and "Page 1 of 1" in hostile_text
    assert "root:" not in hostile_text
    plain = "\n".join(page_texts(found["Plain TEXT_ONLY-NO"][1].content))
    assert "First paragraph." in plain and "Second <one>." in plain
    for person in PEOPLE[:2]:
        detail, doc = found[f"Your bill {person[4]}"]
        text = "\n".join(check_own_letter(doc.content, person, PEOPLE[:2]))
        assert "HOSTILE" not in text and "First paragraph" not in text


def test_fallback_renders_letter_by_letter(settings, engine, monkeypatch) -> None:
    """When the pages cannot be told apart, each letter is rendered on its own."""
    seed(engine, PEOPLE[:3])
    monkeypatch.setattr(pdfmod, "page_ranges", lambda anchors, count: None)
    run(settings, engine, build_job("letter-monitor", settings, engine))
    for detail, doc in letters(engine).values():
        person = next(p for p in PEOPLE if p[3] == detail.address)
        check_own_letter(doc.content, person, PEOPLE[:3])


@pytest.mark.timeout(120)
def test_several_processes(sqlite_url, tmp_path) -> None:
    settings = make_settings(sqlite_url, tmp_path / "var")
    engine = make_engine(settings.database_url)
    try:
        seed(engine)
        job = LetterMonitorJob(settings, engine, processes=2, chunk_size=2)
        assert run(settings, engine, job) == len(PEOPLE)
        for detail, doc in letters(engine).values():
            assert detail.state == "awaiting_send"
            person = next(p for p in PEOPLE if p[3] == detail.address)
            check_own_letter(doc.content, person, PEOPLE)
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://127.0.0.1:9/x.png",
                                 "https://example.com/logo.png",
                                 (pdfmod.LAYOUT_DIR / ".." / ".." / "pdf.py").as_uri()])
def test_letters_fetch_nothing_outside_the_layout(url: str) -> None:
    fetcher = pdfmod._layout_fetcher()
    with pytest.raises(ValueError):
        fetcher(url)


def test_letters_may_use_layout_files_and_data_urls() -> None:
    fetcher = pdfmod._layout_fetcher()
    assert b"@page" in fetcher((pdfmod.LAYOUT_DIR / "letter.css").as_uri()).read()
    assert fetcher("data:text/plain,hello").read() == b"hello"


@pytest.mark.timeout(120)
def test_a_dead_rendering_process_is_replaced() -> None:
    pool = pdfmod.LetterPool(["Sender"], processes=2, chunk_size=1)
    letter = pdfmod.LetterContent(1, "Ann Archer", "1 Acacia Avenue", "Hello", "<p>Hi</p>")
    try:
        assert isinstance(pool.render([letter, letter])[0], bytes)
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(pdfmod.RendererCrashed):
            pool.render([letter, letter])
        assert all(isinstance(pdf, bytes) for pdf in pool.render([letter, letter]))
    finally:
        pool.close()


def test_letters_are_retried_when_the_renderer_crashes(settings, engine, monkeypatch) -> None:
    seed(engine, PEOPLE[:2])

    def crash(self, letters, keep_alive=None):
        raise pdfmod.RendererCrashed("a letter rendering process died: killed")

    monkeypatch.setattr(pdfmod.LetterPool, "render", crash)
    run(settings, engine, build_job("letter-monitor", settings, engine))
    for detail, doc in letters(engine).values():
        assert doc is None
        assert (detail.state, detail.error_code) == ("awaiting_merge", "RENDERER_CRASHED")
        assert detail.next_attempt_at is not None


def test_letters_speak_the_contacts_language_and_carry_their_metadata(settings, engine):
    """"Σελίδα 1 από 3" with the letter's own page count (not the batch's), the date and the
    reference in the contact's language, the sender from configuration, and title, author
    and language in the PDF; ``tagged`` letters carry a structure tree."""
    people = [PEOPLE[0], ("L-5", "Ελένη Χρίστου", "el", "Λεωφ. Μακαρίου 28\n1065 Λευκωσία",
                          "BILL-1005", 150), PEOPLE[2]]
    seed(engine, people)
    assert run(settings, engine, build_job("letter-monitor", settings, engine)) == 3
    by_number = {}
    for _, doc in letters(engine).values():
        reader = PdfReader(io.BytesIO(doc.content))
        text = "\n".join(page.extract_text() for page in reader.pages)
        by_number[next(p[4] for p in people if p[4] in text)] = (reader, text)
    reader, text = by_number["BILL-1005"]
    pages = len(reader.pages)
    assert pages >= 3
    for k in range(1, pages + 1):
        assert f"Σελίδα {k} από {pages}" in reader.pages[k - 1].extract_text()
    today = Formatters("el").date(utcnow().date(), "long")  # "1 Δεκεμβρίου 2026"
    assert today in text and not today.isascii()
    assert "Αριθμός αναφοράς:" in text and "Company ZX Co." in text and "Nicosia" in text
    meta = reader.metadata
    assert meta.title == "Ο λογαριασμός σας BILL-1005" and meta.author == "Company ZX Co."
    assert reader.trailer["/Root"]["/Lang"] == "el"
    en_reader, en_text = by_number["BILL-1001"]
    assert "Page 1 of 1" in en_text and "Our reference:" in en_text
    assert en_reader.metadata.title == "Your bill BILL-1001"
    assert en_reader.trailer["/Root"]["/Lang"] == "en"

    tagged = settings.model_copy(update={"letters": settings.letters.model_copy(
        update={"tagged": True})})
    job = LetterMonitorJob(tagged, engine)
    content = job.pool.render([pdfmod.LetterContent(
        1, "Ann Archer", "1 Acacia Avenue", "Tagged", "<h2>Hi</h2><p>There</p>", "en",
        "1 December 2026", "Our reference: 1")])[0]
    job.close()
    tagged_reader = PdfReader(io.BytesIO(content))
    assert "/StructTreeRoot" in tagged_reader.trailer["/Root"]
    assert tagged_reader.metadata.title == "Tagged"
    assert tagged_reader.trailer["/Root"]["/Lang"] == "en"
