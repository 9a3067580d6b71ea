"""The dashboard: one static page and its script, shipped inside the package.

The page itself holds no data and is served without the token (a browser cannot send a
bearer header on navigation); its script asks for the token and sends it on every API call.
"""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PACKAGE = "taskloom.api"
BASE_MARK = "__TASKLOOM_BASE__"
# The page loads only its own script and style and renders data as text; the policy makes an
# injection that slipped past that inert anyway.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'self'; object-src 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def index_html() -> str:
    """The page template."""
    return (resources.files(PACKAGE) / "static" / "index.html").read_text(encoding="utf-8")


def router() -> APIRouter:
    """`GET /`: the page, with `<base href>` set to where the app is mounted."""
    api = APIRouter(include_in_schema=False)
    page = index_html()

    @api.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        # relative URLs in the page then work under any mount prefix, with or without "/"
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        body = page.replace(BASE_MARK, html.escape(base, quote=True))
        return HTMLResponse(body, headers=PAGE_HEADERS)

    return api


def static_files() -> StaticFiles:
    """The page's script and style."""
    return StaticFiles(packages=[(PACKAGE, "static")])
