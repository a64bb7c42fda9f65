"""Open and click tracking: the pixel and rewritten links of a merged email, and their events.

When tracking is on (``[web] tracking = "all"``, or ``"notification_runs"`` for the
communications of notification runs only), the Email Monitor passes each email's HTML through
:func:`rewrite_html_for_tracking`: every http(s) link becomes ``<tracking>/t/c/<id>``, where
``<id>`` is a random opaque id whose destination is recorded in ``tracking_links`` — the click
endpoint redirects only there, never to a URL taken from the request, so there is no open
redirect. An invisible ``<tracking>/t/o/<token>.gif`` is added; its token is the detail id
signed with the dynamic links' secret and timestamped, so a guessed or altered token records
nothing, and one older than ``[links] max_age_days`` records nothing either.
Dynamic links (consent, acceptances) are left alone: they act on their own signed tokens.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import case, exists, func, insert, literal, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.links import link_secret
from comms_pipeline.queue.callbacks import enqueue_event
from comms_pipeline.rendering import TemplateError
from comms_pipeline.rendering.sandbox import Budget, SandboxError
from comms_pipeline.store.models import (
    details_t,
    headers_t,
    notifications_t,
    tracking_events_t,
    tracking_links_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

links_t = tracking_links_t
events_t = tracking_events_t
OPEN_SALT = "comms.tracking.open"
USER_AGENT_MAX = 300

_A_TAG = re.compile(r"<a\b", re.I)
_HREF_NAME = re.compile(r"\bhref\s*=\s*(?=[\"'])", re.I)
_BODY_END = re.compile(r"</body\s*>", re.I)
#: Links looked at between two looks at the render budget's clock.
_TICK_EVERY = 64


class _NextMatch:
    """``pattern.search(text, at)`` in amortised linear time over increasing ``at``."""

    def __init__(self, pattern: re.Pattern[str], text: str) -> None:
        self.pattern, self.text = pattern, text
        self.found: re.Match[str] | None = None
        self.done = False

    def find(self, at: int) -> re.Match[str] | None:
        if self.done or (self.found is not None and self.found.start() >= at):
            return self.found
        self.found = self.pattern.search(self.text, at)
        self.done = self.found is None
        return self.found


class _NextChar:
    """``text.find(char, at)`` in amortised linear time over increasing ``at``: a found
    position serves every later search before it, and "none left" serves all of them."""

    def __init__(self, text: str, char: str) -> None:
        self.text, self.char, self.found = text, char, -2

    def find(self, at: int) -> int:
        if self.found == -1 or self.found >= at:
            return self.found
        self.found = self.text.find(self.char, at)
        return self.found


@dataclass
class TrackedHtml:
    """A rewritten HTML body and the links to record for it."""

    detail_id: int
    html: str
    links: list[dict[str, Any]] = field(default_factory=list)


class Tracker:
    """Tracking for one configuration: which emails are tracked, and how links are rewritten."""

    def __init__(self, settings: Any) -> None:
        web = settings.web
        self.mode = web.tracking
        self.base_url = web.tracking_url
        links = settings.links
        self._skip = tuple(p for p in (links.base_url, self.base_url + "/t/") if p)
        self._settings = settings
        self._signer: URLSafeTimedSerializer | None = None
        self.max_age = links.max_age_days * 86400

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def signer(self) -> URLSafeTimedSerializer:
        if self._signer is None:
            secret = link_secret(self._settings.links,
                                 getattr(self._settings, "var_dir", None))
            self._signer = URLSafeTimedSerializer(secret, salt=OPEN_SALT)
        return self._signer

    def tracked_ids(self, conn: Connection, detail_ids: Sequence[int]) -> set[int]:
        """Which of these details are tracked under the configured mode (one query)."""
        if self.mode == "off" or not detail_ids:
            return set()
        if self.mode == "all":
            return set(detail_ids)
        q = (select(details_t.c.id).join(headers_t, headers_t.c.id == details_t.c.header_id)
             .where(details_t.c.id.in_(list(detail_ids)), headers_t.c.notification_id.isnot(None)))
        return set(conn.execute(q).scalars())

    def open_token(self, detail_id: int) -> str:
        return str(self.signer.dumps(detail_id))

    def opened_detail(self, token: str, max_age: float | None = None) -> int | None:
        """The detail id of a pixel token, or None when it is not one of ours, has expired
        (``[links] max_age_days``) or, though signed by us, holds no detail id."""
        try:
            value = self.signer.loads(token, max_age=self.max_age if max_age is None  # type: ignore[arg-type]
                                      else max_age)
        except (BadData, ValueError, TypeError):  # bad or expired signature, unreadable value
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2 ** 63:
            return value
        return None

    def rewrite(self, detail_id: int, body: str) -> TrackedHtml:
        """Rewrite links and add the pixel (no database access: see :func:`record_links`).

        One pass over the body: each ``<a`` tag is read up to its ``>`` and the scan goes on
        after it, so a body of thousands of unclosed ``<a`` fragments costs what its length
        does; the render's time limit applies as well.
        """
        tracked = TrackedHtml(detail_id, body)
        budget = Budget()
        closers = {">": _NextChar(body, ">"), '"': _NextChar(body, '"'),
                   "'": _NextChar(body, "'")}
        hrefs = _NextMatch(_HREF_NAME, body)
        parts: list[str] = []
        pos = copied = seen = 0
        while (tag := _A_TAG.search(body, pos)) is not None:
            seen += 1
            if not seen % _TICK_EVERY:
                try:
                    budget.tick()
                except SandboxError as exc:
                    raise TemplateError(f"tracking the email's links: {exc}") from None
            end = closers[">"].find(tag.end())
            limit = end if end >= 0 else len(body)
            pos = end + 1 if end >= 0 else tag.end()
            name = hrefs.find(tag.end())
            while name is not None and name.start() < limit:
                quote_at = name.end()
                close = closers[body[quote_at]].find(quote_at + 1)
                if close >= 0:
                    break
                name = hrefs.find(name.end())  # an unclosed value: a later href may do
            else:
                continue
            pos = close + 1  # as the old pattern did: an ``<a`` after the value is a new tag
            url = html.unescape(body[quote_at + 1:close]).strip()
            if not url.lower().startswith(("http://", "https://")) or url.startswith(self._skip):
                continue
            link_id = secrets.token_urlsafe(16)
            tracked.links.append({"id": link_id, "detail_id": detail_id, "url": url})
            parts += [body[copied:quote_at],
                      f'"{html.escape(self.base_url + "/t/c/" + link_id)}"']
            copied = close + 1
        parts.append(body[copied:])
        rewritten = "".join(parts)
        pixel = (f'<img src="{html.escape(self.base_url)}/t/o/{self.open_token(detail_id)}.gif" '
                 'width="1" height="1" alt="" style="display:none">')
        ends = list(_BODY_END.finditer(rewritten))
        if ends:
            at = ends[-1].start()
            rewritten = rewritten[:at] + pixel + rewritten[at:]
        else:
            rewritten += pixel
        tracked.html = rewritten
        return tracked


def record_links(conn: Connection, tracked: Sequence[TrackedHtml]) -> None:
    """Insert the tracking links of rewritten bodies (in the merge's own transaction)."""
    rows = [dict(link, created_at=utcnow()) for t in tracked for link in t.links]
    if rows:
        conn.execute(insert(links_t), rows)


def rewrite_html_for_tracking(conn: Connection, detail_id: int, body: str | None,
                              settings: Any, tracker: Tracker | None = None) -> str | None:
    """The HTML to send for one email: unchanged when not tracked, else rewritten with its
    links recorded through ``conn``."""
    tracker = tracker or Tracker(settings)
    if body is None or not tracker.tracked_ids(conn, [detail_id]):
        return body
    tracked = tracker.rewrite(detail_id, body)
    record_links(conn, [tracked])
    return tracked.html


def strip_pixel(body: str, settings: Any) -> str:
    """The HTML without our open pixel: an agent reading a stored email is not an open."""
    base = re.escape(html.escape(Tracker(settings).base_url))
    return re.sub(rf'<img src="{base}/t/o/[^"]*"[^>]*>', "", body)


# -- events -----------------------------------------------------------------------------------
def record_open(conn: Connection, detail_id: int, user_agent: str | None) -> bool:
    """Record an open of an existing detail; False when there is no such detail."""
    exists_q = select(literal(detail_id), literal("open"), literal(_ua(user_agent)),
                      literal(utcnow())).where(exists().where(details_t.c.id == detail_id))
    result = conn.execute(insert(events_t).from_select(
        ["detail_id", "kind", "user_agent", "at"], exists_q))
    if result.rowcount > 0:
        enqueue_event(conn, detail_id=detail_id, event="opened")
    return result.rowcount > 0


def record_click(conn: Connection, link_id: str, user_agent: str | None) -> str | None:
    """Record a click on a recorded link; return the link's destination (None: unknown)."""
    link = conn.execute(select(links_t.c.detail_id, links_t.c.url)
                        .where(links_t.c.id == link_id)).first()
    if link is None:
        return None
    conn.execute(insert(events_t).values(detail_id=link.detail_id, kind="click",
                                         link_id=link_id, user_agent=_ua(user_agent),
                                         at=utcnow()))
    enqueue_event(conn, detail_id=link.detail_id, event="clicked",
                  details={"link_id": link_id})
    return str(link.url)


def _ua(user_agent: str | None) -> str | None:
    return user_agent[:USER_AGENT_MAX] if user_agent else None


def tracking_counts(conn: Connection, detail_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Opens, clicks and the first/last event time of each detail (one query)."""
    if not detail_ids:
        return {}
    e = events_t.c
    q = (select(e.detail_id,
                func.sum(case((e.kind == "open", 1), else_=0)).label("opens"),
                func.sum(case((e.kind == "click", 1), else_=0)).label("clicks"),
                func.min(e.at).label("first_at"), func.max(e.at).label("last_at"))
         .where(e.detail_id.in_(list(detail_ids))).group_by(e.detail_id))
    return {r.detail_id: {"opens": int(r.opens or 0), "clicks": int(r.clicks or 0),
                          "first_event_at": r.first_at, "last_event_at": r.last_at}
            for r in conn.execute(q)}


def tracking_events(conn: Connection, detail_id: int) -> list[dict[str, Any]]:
    """Every tracking event of one communication, oldest first, with the clicked URL."""
    q = (select(events_t.c.kind, events_t.c.at, events_t.c.user_agent, links_t.c.url)
         .outerjoin(links_t, links_t.c.id == events_t.c.link_id)
         .where(events_t.c.detail_id == detail_id).order_by(events_t.c.id))
    return [dict(r._mapping) for r in conn.execute(q)]


def run_report(conn: Connection, run_id: int) -> dict[str, int]:
    """A notification run's communications: how many, sent (Completed), opened, clicked."""

    notes = notifications_t
    run_details = (select(details_t.c.id, details_t.c.state)
                   .join(headers_t, headers_t.c.id == details_t.c.header_id)
                   .join(notes, notes.c.id == headers_t.c.notification_id)
                   .where(notes.c.run_id == run_id)).subquery()
    e = events_t.c

    def touched(kind: str):
        return func.count(func.distinct(case((e.kind == kind, e.detail_id))))

    total, sent = conn.execute(select(
        func.count(), func.sum(case((run_details.c.state == "completed", 1), else_=0)))
        .select_from(run_details)).one()
    opened, clicked = conn.execute(select(touched("open"), touched("click")).where(
        e.detail_id.in_(select(run_details.c.id)))).one()
    return {"communications": int(total or 0), "sent": int(sent or 0),
            "opened": int(opened or 0), "clicked": int(clicked or 0)}
