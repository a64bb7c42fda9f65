"""``comms demo``: the whole pipeline end to end on SQLite and local folders.

A fresh database under ``var/demo``, the demo contacts of "Company ZX" (the seeds' example
company), the built-in templates in English and Greek, a handful of triggers across media
(some deliberately bad), every job and daemon run to completion, and a summary of what was
sent, what was rejected and why, and where the outputs are.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline import admin
from comms_pipeline.admin import AddressSpec
from comms_pipeline.api import trigger
from comms_pipeline.daemons import DAEMONS, build_daemon
from comms_pipeline.db import make_engine, upgrade, utcnow
from comms_pipeline.jobs import run_job
from comms_pipeline.models import Contact, details_t, documents_t, headers_t
from comms_pipeline.states import public_state
from comms_pipeline.worker import Runner

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.config import Settings

CONTACTS = [
    ("C-1001", "Maria Georgiou", "el", True, [
        AddressSpec("email", "maria.georgiou@example.com", "home", True),
        AddressSpec("phone", "+357 99 100001", "mobile", True),
        AddressSpec("device", "demo-device-token-maria", "mobile", True),
        AddressSpec("postal", "Maria Georgiou\n12 Makariou Avenue\n1065 Nicosia\nCyprus",
                    "home", True)]),
    ("C-1002", "John Smith", "en", False, [
        AddressSpec("email", "john.smith@example.com", "home", True),
        AddressSpec("email", "j.smith@work.example.com", "work", False),
        AddressSpec("phone", "+357 99 100002", "mobile", True),
        AddressSpec("postal", "John Smith\n4 Ledra Street\n1011 Nicosia\nCyprus", "home", True)]),
    ("C-1003", "Eleni Christou", "el", True, [
        AddressSpec("email", "eleni@example.com", "home", True),
        AddressSpec("phone", "+357 99 100003", "mobile", True)]),
    ("C-1004", "Andreas Pavlou", "en", False, [
        AddressSpec("phone", "12ab-not-a-number", "mobile", True)]),
    ("C-1005", "Sofia Nicolaou", "en", False, [
        AddressSpec("email", "sofia@@example", "home", True)]),
    ("C-1006", "Petros Ioannou", "de", False, [
        AddressSpec("email", "petros@example.com", "home", True),
        AddressSpec("phone", "+357 99 100006", "mobile", True)]),
]

JOBS_IN_ORDER = ("monitor", "email-monitor", "letter-monitor")
DAEMONS_IN_ORDER = ("sms", "push-handset", "email", "letter", "push-external", "storage")


@dataclass
class DemoTrigger:
    what: str
    kwargs: dict[str, Any]


def demo_triggers() -> list[DemoTrigger]:
    past = utcnow() - timedelta(days=1)
    bill = {"bill": {"number": "B-2026-0042", "total_amount": "48.90", "due_date": "2026-12-15",
                     "currency": "EUR"}}
    payment = {"payment": {"number": "P-77", "amount": "25.00", "currency": "EUR",
                           "posted_on": "2026-11-23"}}
    return [
        DemoTrigger("welcome email (Greek)", dict(contact_ref="C-1001", template_code="WELCOME",
                    entities={"subscription": {"number": "S-1001"}})),
        DemoTrigger("welcome email (English)", dict(contact_ref="C-1002",
                    template_code="WELCOME", entities={"subscription": {"number": "S-1002"}})),
        DemoTrigger("bill issued email", dict(contact_ref="C-1003", template_code="BILL_ISSUED",
                    entities=bill)),
        DemoTrigger("payment receipt SMS (Greek)", dict(contact_ref="C-1001",
                    template_code="PAYMENT_RECEIPT_SMS", entities=payment)),
        DemoTrigger("payment receipt SMS (German → English)", dict(
                    contact_ref="C-1006", template_code="PAYMENT_RECEIPT_SMS", entities=payment)),
        DemoTrigger("payment receipt letter", dict(contact_ref="C-1002",
                    template_code="PAYMENT_RECEIPT_LETTER", entities=payment)),
        DemoTrigger("bill email to every address", dict(contact_ref="C-1002",
                    template_code="BILL_ISSUED", entities=bill, send_to="all")),
        DemoTrigger("bad: unknown template", dict(contact_ref="C-1001",
                    template_code="NO_SUCH_TEMPLATE")),
        DemoTrigger("bad: unknown contact", dict(contact_ref="C-9999",
                    template_code="PAYMENT_RECEIPT_SMS", entities=payment)),
        DemoTrigger("bad: malformed phone number", dict(contact_ref="C-1004",
                    template_code="PAYMENT_RECEIPT_SMS", entities=payment)),
        DemoTrigger("bad: malformed email address", dict(contact_ref="C-1005",
                    template_code="WELCOME")),
        DemoTrigger("bad: no email address", dict(contact_ref="C-1004", template_code="WELCOME")),
        DemoTrigger("bad: marketing without opt-in", dict(contact_ref="C-1002",
                    template_code="OPT_IN_CONFIRMATION")),
        DemoTrigger("bad: expired before processing", dict(contact_ref="C-1003",
                    template_code="PAYMENT_RECEIPT_SMS", entities=payment, expires_at=past)),
    ]


def demo_settings(settings: Settings) -> Settings:
    var = settings.var_dir / "demo"
    return settings.model_copy(update={
        "paths": settings.paths.model_copy(update={"var": var}),
        "database": settings.database.model_copy(update={"url": f"sqlite:///{var}/comms.db"}),
    })


def prepare(settings: Settings) -> Engine:
    var = settings.var_dir
    if var.exists():
        shutil.rmtree(var)
    var.mkdir(parents=True)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    from comms_pipeline.template_files import load_builtin_templates

    with engine.begin() as conn:
        load_builtin_templates(conn)
        for ref, name, language, marketing, addresses in CONTACTS:
            admin.add_contact(conn, ref, name, language=language, addresses=addresses,
                              direct_marketing=marketing)
    return engine


def run_demo(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    settings = demo_settings(settings)
    engine = prepare(settings)
    for t in demo_triggers():
        trigger(engine, **t.kwargs)
    say(f"{len(demo_triggers())} communication requests triggered")
    for name in JOBS_IN_ORDER:
        say(f"job {name}: {run_job(name, settings, engine)} handled")
    for name in DAEMONS_IN_ORDER:
        if name in DAEMONS:
            handled = Runner(settings, engine, build_daemon(name, settings, engine),
                             once=True).run()
            say(f"daemon {name}: {handled} handled")
    summary = summarise(engine)
    summary["var"] = str(settings.var_dir)
    engine.dispose()
    return summary


def summarise(engine: Engine) -> dict[str, Any]:
    contacts = Contact.__table__
    with engine.connect() as conn:
        headers = conn.execute(select(headers_t).order_by(headers_t.c.id)).mappings().all()
        details = conn.execute(
            select(details_t, contacts.c.ref.label("contact_ref"),
                   documents_t.c.location, documents_t.c.id.label("document_id"))
            .join(contacts, contacts.c.id == details_t.c.contact_id, isouter=True)
            .join(documents_t, documents_t.c.detail_id == details_t.c.id, isouter=True)
            .order_by(details_t.c.id)).mappings().all()
    return {
        "headers": [dict(h) for h in headers],
        "details": [{**d, "public_state": public_state(d["state"]).value} for d in details],
    }
