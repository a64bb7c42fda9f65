"""Dynamic links: ``/links/<name>?t=<token>`` (and ``/links/unsubscribe``, the email's
List-Unsubscribe address).

GET shows a confirmation page and changes nothing (mail scanners prefetch links); POST acts
and redirects (303) to the configured redirection URL — never to an address from the request.
An RFC 8058 one-click POST (body ``List-Unsubscribe=One-Click``) acts and answers 200: no
cookie, session or page is involved, the signed token is the whole credential. A tampered or
wrong-purpose token answers 400, an expired one 410, as a page for a browser or the JSON error
shape for a client that asks for JSON.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from comms_pipeline.core.dynamic_links import DYNAMIC_LINK_NAMES
from comms_pipeline.pipeline.links import (
    ExpiredLinkError,
    InvalidLinkError,
    LinkPayload,
    verify_link,
)
from comms_pipeline.web.link_actions import (
    QUESTIONS,
    LinkResult,
    UnknownLinkContact,
    perform,
    used_at,
)
from comms_pipeline.web.pages import (
    SECURITY_HEADERS,
    confirm_form,
    error_page,
    page,
    paragraph,
)
from comms_pipeline.web.strict_json import StrictJsonRoute

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/links", tags=["dynamic links"],
                   route_class=StrictJsonRoute)

#: The List-Unsubscribe address of marketing emails carries an opt-out token.
ALIASES = {"unsubscribe": "opt_out_direct_marketing"}
MAX_BODY = 16 * 1024
_MULTIPART_ONE_CLICK = re.compile(
    rb'name="?List-Unsubscribe"?\r?\n(?:[^\r\n]+\r?\n)*\r?\nOne-Click\r?\n', re.I)

_HTML: dict[str, Any] = {"content": {"text/html": {}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_HTML, "description": "Tampered, malformed or wrong-purpose token"},
    404: {**_HTML, "description": "No such link"},
    410: {**_HTML, "description": "The link has expired"}}


class _Refused(Exception):
    def __init__(self, status: int, code: str, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.code, self.title, self.text = status, code, title, text


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _refusal(request: Request, exc: _Refused) -> Response:
    if _wants_json(request):
        return JSONResponse({"code": exc.code, "message": exc.text, "details": None},
                            status_code=exc.status, headers=SECURITY_HEADERS)
    return error_page(exc.status, exc.title, exc.text)


def _verify(request: Request, name: str) -> tuple[str, LinkPayload, str]:
    action = ALIASES.get(name, name)
    if action not in DYNAMIC_LINK_NAMES:
        raise _Refused(404, "not_found", "Unknown link", "This link does not exist.")
    token = request.query_params.get("t", "")
    if not token or len(token) > 2000:
        raise _Refused(400, "invalid_link", "Invalid link",
                       "This link is incomplete. Please use the link exactly as you received it.")
    try:
        payload = verify_link(token, action, request.app.state.settings)
    except ExpiredLinkError:
        raise _Refused(410, "link_expired", "Link expired",
                       "This link has expired. Please use a more recent message.") from None
    except InvalidLinkError:
        raise _Refused(400, "invalid_link", "Invalid link",
                       "This link is not valid. Please use the link exactly as you received it."
                       ) from None
    return action, payload, token


@router.get("/{name}", response_class=Response, responses=_RESPONSES,
            summary="Confirmation page of a dynamic link (changes nothing)")
def confirm(request: Request, name: str) -> Response:
    try:
        action, _payload, token = _verify(request, name)
    except _Refused as exc:
        return _refusal(request, exc)
    with request.app.state.engine.connect() as conn:
        done_at = used_at(conn, token)
    if done_at is not None:
        return page("Already done", paragraph(
            f"This link was already used on {done_at:%Y-%m-%d at %H:%M} UTC. Nothing more "
            "to do."))
    question, button = QUESTIONS[action]
    return page("Please confirm", confirm_form(question, button))


async def _is_one_click(request: Request) -> bool:
    body = await request.body()
    if len(body) > MAX_BODY:
        return False
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return bool(_MULTIPART_ONE_CLICK.search(body))
    try:
        form = parse_qs(body.decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError:
        return False
    return form.get("List-Unsubscribe") == ["One-Click"]


@router.post("/{name}", response_class=Response,
             responses={200: {**_HTML, "description": "Done (one-click, or no redirection "
                                                      "URL configured)"},
                        303: {"description": "Done: to the configured redirection URL"},
                        409: {**_HTML, "description": "This link was already used"},
                        **_RESPONSES},
             summary="Perform a dynamic link's action (RFC 8058 one-click included)")
async def act(request: Request, name: str) -> Response:
    try:
        action, payload, token = _verify(request, name)
    except _Refused as exc:
        return _refusal(request, exc)
    one_click = await _is_one_click(request)
    engine = request.app.state.engine

    def perform_once() -> LinkResult:
        with engine.begin() as conn:
            return perform(conn, request.app.state.settings, payload, token)

    try:
        result = await run_in_threadpool(perform_once)
    except UnknownLinkContact:
        return _refusal(request, _Refused(404, "not_found", "Unknown customer",
                                          "We could not find your details any more."))
    if result.already_done and not one_click:
        return _refusal(request, _Refused(
            409, "link_used", "Already done",
            f"This link was already used on {result.at:%Y-%m-%d at %H:%M} UTC."))
    log.info("link.followed", action=action, one_click=one_click,
             repeated=result.already_done)
    redirect = request.app.state.settings.links.redirection_url
    if one_click or not redirect:
        return page("Done", paragraph("Thank you: your choice has been recorded."))
    return RedirectResponse(redirect, status_code=303, headers={"Cache-Control": "no-store"})
