"""``comms demo``: the whole pipeline end to end on SQLite and local folders.

A fresh database (the configured ``var/comms.db``), the demo contacts of "Company ZX" (the
seeds' example company), the built-in templates in English and Greek, a handful of triggers
across media (some deliberately bad), every job and daemon run to completion, and a summary
of what was sent, what was rejected and why, and where the outputs are.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import public_state
from comms_pipeline.pipeline import admin_records as admin
from comms_pipeline.pipeline.admin_records import AddressSpec
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.registry import DAEMONS, build_daemon
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import contacts_t, details_t, documents_t, headers_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

CONTACTS = [
    ("C-1001", "Maria Georgiou", "el", True, [
        AddressSpec("email", "maria.georgiou@example.com", "home", True),
        AddressSpec("phone", "+357 99 100001", "mobile", True),
        AddressSpec("device", "demo-device-token-maria", "mobile", True),
        AddressSpec("postal", "12 Makariou Avenue\n1065 Nicosia\nCyprus",
                    "home", True)]),
    ("C-1002", "John Smith", "en", False, [
        AddressSpec("email", "john.smith@example.com", "home", True),
        AddressSpec("email", "j.smith@work.example.com", "work", False),
        AddressSpec("phone", "+357 99 100002", "mobile", True),
        AddressSpec("postal", "4 Ledra Street\n1011 Nicosia\nCyprus", "home", True)]),
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


def demo_bill(name: str) -> dict[str, Any]:
    """A bill of the demo with every field the BILL_ISSUED template reads."""
    return {"bill": {"number": "B-2026-0042", "period": "2026-11", "issued_on": "2026-12-01",
                     "due_date": "2026-12-15", "total_amount": "48.90",
                     "total_amount_to_be_paid": "48.90", "currency": "EUR"},
            "accounts_receivable": {"number": "AR-" + name.split()[0].upper(), "name": name,
                                    "currency": "EUR"}}


def demo_subscription(number: str, kind: str) -> dict[str, Any]:
    return {"subscription": {"number": number, "type": kind,
                             "services": "Fibre 500, TV Basic",
                             "installed_items": "Router FX-9, Set-top box HD-200"}}


DEMO_PAYMENT = {"payment": {"number": "P-77", "amount": "25.00", "currency": "EUR",
                            "posted_on": "2026-11-23", "method": "card"}}
DEMO_SERVICE_REQUEST = {"service_request": {
    "number": "SR-310", "type": "fibre installation",
    "response_description": "A technician visits on Friday", "responded_by": "Care team",
    "response_date": "2026-11-23"}}
#: What the templates the demo does not trigger directly are merged with (notification runs,
#: event rules, reminders): the demo's business data in the shape each template reads.
DEMO_OTHER_DATA: dict[str, dict[str, Any]] = {
    "ACCOUNT_BALANCE": {"notification": {
        "number": "N-1002", "type": "UNSETTLED_SUBSCRIPTIONS",
        "accounts_receivable": {"number": "AR-1002", "name": "John Smith",
                                "outstanding_amount": "118.20", "currency": "EUR"},
        "bills_notified_amount": [{"number": "B-2024-0901", "amount": "118.20",
                                   "due_date": "2024-10-21"}]}},
    "OVERDUE_REMINDER_SMS": {"accounts_receivable": {
        "number": "AR-1004", "name": "Andreas Pavlou", "outstanding_amount": "64.90",
        "currency": "EUR"}},
    "WALLET_LOW_BALANCE_SMS": {"wallet": {
        "number": "W-1003", "available_amount": "3.40", "currency": "EUR",
        "estimated_consumption_date": "2026-12-12"}},
}
DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "MONTHLY_OFFER": {"offer_title": "Fibre 1000 for the price of 500",
                      "offer_details": "Double your speed for three months at no extra cost.",
                      "offer_code": "NOV10"},
}


def demo_data(code: str, contact_name: str = "Maria Georgiou") -> tuple[dict[str, Any],
                                                                         dict[str, Any]]:
    """``(entities, params)`` the demo merges template ``code`` with (tests render every
    built-in template with it: no tag may be missing)."""
    entities: dict[str, Any] = {
        "BILL_ISSUED": demo_bill(contact_name),
        "WELCOME_SUBSCRIBER": demo_subscription("S-1001", "Residential"),
        "PAYMENT_RECEIPT": DEMO_PAYMENT, "PAYMENT_RECEIPT_SMS": DEMO_PAYMENT,
        "SERVICE_REQUEST_RESPONSE": DEMO_SERVICE_REQUEST,
    }.get(code) or DEMO_OTHER_DATA.get(code, {})
    return entities, DEMO_PARAMS.get(code, {})


def demo_triggers() -> list[DemoTrigger]:
    past = utcnow() - timedelta(days=1)
    payment = DEMO_PAYMENT
    request = DEMO_SERVICE_REQUEST

    def t(what: str, contact: str, code: str, **kw: Any) -> DemoTrigger:
        return DemoTrigger(what, dict(contact_ref=contact, template_code=code, **kw))

    return [
        t("welcome email (Greek)", "C-1001", "WELCOME_SUBSCRIBER",
          entities=demo_subscription("S-1001", "Fibre 500")),
        t("welcome email (English)", "C-1002", "WELCOME_SUBSCRIBER",
          entities=demo_subscription("S-1002", "Fibre 100")),
        t("bill issued email (Greek)", "C-1003", "BILL_ISSUED",
          entities=demo_bill("Eleni Christou")),
        t("bill issued email to every address", "C-1002", "BILL_ISSUED",
          entities=demo_bill("John Smith"), send_to="all"),
        t("service request response with a dynamic link", "C-1002",
          "SERVICE_REQUEST_RESPONSE", entities=request),
        t("payment receipt SMS (Greek)", "C-1001", "PAYMENT_RECEIPT_SMS", entities=payment),
        t("payment receipt SMS (German contact: English fallback)", "C-1006",
          "PAYMENT_RECEIPT_SMS", entities=payment),
        t("payment receipt push notification", "C-1001", "PAYMENT_RECEIPT_SMS",
          entities=payment, media="push"),
        t("payment receipt letter", "C-1002", "PAYMENT_RECEIPT", entities=payment,
          media="letter"),
        t("payment receipt letter (Greek)", "C-1001", "PAYMENT_RECEIPT", entities=payment,
          media="letter"),
        t("bad: unknown template", "C-1001", "NO_SUCH_TEMPLATE"),
        t("bad: unknown contact", "C-9999", "PAYMENT_RECEIPT_SMS", entities=payment),
        t("bad: malformed phone number", "C-1004", "PAYMENT_RECEIPT_SMS", entities=payment),
        t("bad: malformed email address", "C-1005", "WELCOME_SUBSCRIBER",
          entities=demo_subscription("S-1005", "Residential")),
        t("bad: no email address", "C-1004", "WELCOME_SUBSCRIBER",
          entities=demo_subscription("S-1004", "Business")),
        t("bad: marketing without opt-in", "C-1002", "MONTHLY_OFFER",
          params=DEMO_PARAMS["MONTHLY_OFFER"]),
        t("bad: expired before processing", "C-1003", "PAYMENT_RECEIPT_SMS", entities=payment,
          expires_at=past),
    ]


#: Written beside the demo's database: running the demo again may replace what it made.
DEMO_MARKER = ".demo"


def demo_settings(settings: Settings) -> Settings:
    """The demo runs on the configured var folder and its SQLite database (``var/comms.db``
    by default), so the plain commands the README shows next (``bin/comms status``, ``queue
    list``, ``requests list``) inspect what it did."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise CommsError("the demo runs on the embedded SQLite database only: unset "
                         "COMMS_DATABASE_URL (or point it at a sqlite:/// file) to run it")
    return settings


def _not_the_demos(db_file: Path, var: Path) -> bool:
    """True when ``db_file`` holds contacts or requests the demo did not make."""
    if not db_file.exists() or (var / DEMO_MARKER).exists():
        return False
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as conn:
            return any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                       for table in ("contacts", "request_headers"))
    except sqlite3.Error:
        return False  # not a migrated database: nothing of value to keep


def prepare(settings: Settings) -> Engine:
    from sqlalchemy.engine import make_url

    var = settings.var_dir
    db_file = Path(make_url(settings.database_url).database or "")
    if _not_the_demos(db_file, var):
        raise CommsError(f"{db_file} holds data the demo did not make, and the demo starts "
                         f"from a fresh database: run it in another folder "
                         f"(COMMS_PATHS_VAR=var/demo) or move that database away")
    var.mkdir(parents=True, exist_ok=True)
    for old in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
        old.unlink(missing_ok=True)
    for folder in ("out", "store"):  # the previous demo's outputs; pidfiles and logs stay
        shutil.rmtree(var / folder, ignore_errors=True)
    (var / DEMO_MARKER).write_text("made by `comms demo`: running it again replaces it\n")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    from comms_pipeline.notifications.types import load_builtin_notifications
    from comms_pipeline.pipeline.entity_sources import load_demo_business
    from comms_pipeline.pipeline.template_files import load_builtin_templates

    load_demo_business(settings.database_url)  # the business data of "Company ZX"
    with engine.begin() as conn:
        load_builtin_templates(conn)
        load_builtin_notifications(conn)
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
    # The seeds' business examples: an event rule fired by "payment posted", and a batch
    # notification run over the business data (wallets with a low balance).
    trigger(engine, contact_ref="C-1001", event="posted", event_number="EV-5001",
            entities={"payment": {"number": "P-5001", "amount": "42.50", "currency": "EUR",
                                  "posted_on": "2026-11-23"}})
    say("event 'payment posted' triggered (event rules expand it)")
    from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications

    try:
        run = run_notifications(settings, engine, "LOW_WALLET_BALANCE")
        say(f"notification run LOW_WALLET_BALANCE: {run.get('created', 0)} created, "
            f"{run.get('skipped_condition', 0)} skipped by condition")
    except RunAlreadyDoneError as exc:  # a demo run again on the same day
        say(str(exc))
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
    contacts = contacts_t
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
