"""Open pixel and click redirect (see :mod:`comms_pipeline.pipeline.tracking`).

The pixel always answers the same GIF, so a guessed token learns nothing; only a token signed
by us records an open. A click redirects only to the destination recorded for its opaque id
when the email was merged; an unknown id gets a plain 404 page, never a redirect.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from comms_pipeline.pipeline.tracking import record_click, record_open
from comms_pipeline.web.pages import error_page
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(prefix="/t", tags=["tracking"],
                   route_class=StrictJsonRoute)

#: A transparent 1x1 GIF.
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00"
         b"\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
NO_STORE = {"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"}
_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,43}$")


@router.get("/o/{token}.gif", response_class=Response,
            responses={200: {"content": {"image/gif": {}}, "description": "The pixel"}},
            summary="Open pixel (records an open)")
def pixel(request: Request, token: str) -> Response:
    detail_id = request.app.state.tracker.opened_detail(token) if len(token) < 200 else None
    if detail_id is not None:
        with request.app.state.engine.begin() as conn:
            record_open(conn, detail_id, request.headers.get("user-agent"))
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/c/{link_id}", response_class=Response,
            responses={302: {"description": "To the link's recorded destination"},
                       404: {"content": {"text/html": {}}, "description": "No such link"}},
            summary="Click redirect (records a click)")
def click(request: Request, link_id: str) -> Response:
    url = None
    if _LINK_ID.match(link_id):
        with request.app.state.engine.begin() as conn:
            url = record_click(conn, link_id, request.headers.get("user-agent"))
    if url is None:
        return error_page(404, "Unknown link", "This link does not exist.")
    return RedirectResponse(url, status_code=302, headers=NO_STORE)
