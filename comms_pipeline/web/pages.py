"""The few HTML pages a customer sees (dynamic link confirmation, done, errors).

Plain pages with no scripts, no cookies and no external resources; every value is escaped.
They may not be framed (no clickjacking of a consent button).
"""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;
color:#222}}button{{font-size:1.1rem;padding:.6rem 1.4rem;cursor:pointer}}
.note{{color:#666}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body_html: str, status: int = 200) -> HTMLResponse:
    """A page; ``body_html`` must already be escaped (use :func:`paragraph`)."""
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body_html),
                        status_code=status, headers=SECURITY_HEADERS)


def paragraph(text: str, css: str | None = None) -> str:
    cls = f' class="{html.escape(css)}"' if css else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def confirm_form(question: str, button: str) -> str:
    """A form that posts back to the same address (the token stays in the query)."""
    return (f"{paragraph(question)}<form method=\"post\">"
            f"<button type=\"submit\" id=\"confirm\">{html.escape(button)}</button></form>")


def error_page(status: int, title: str, text: str) -> HTMLResponse:
    return page(title, paragraph(text), status)
