"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from package files, never a CDN.

Self-hosted telecom networks often have no way out to the internet: FastAPI's default pages
load their scripts from jsDelivr and stay blank there. The assets come from the
``fastapi-offline`` wheel (maintained, it ships Swagger UI's bundle and ReDoc's standalone
script), served under ``/docs-assets``.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def assets_dir() -> str:
    """The wheel's folder of Swagger UI and ReDoc files."""
    return str(resources.files("fastapi_offline").joinpath("static"))


def install_offline_docs(app: FastAPI, docs_url: str = "/docs",
                         redoc_url: str = "/redoc") -> None:
    """Serve the documentation pages with local assets (the app is made with
    ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon.png")

    @app.get(redoc_url, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS}/favicon.png",
                              with_google_fonts=False)
