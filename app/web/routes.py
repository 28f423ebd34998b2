"""The web page: ``/`` redirects to ``/ui/``, which serves the static single-page app shipped in
``app/web/static`` (vanilla ES modules and CSS, no CDN, works offline).

The page holds no server-side state and has no private endpoint: it calls the public ``/v1`` API with
the key the user types once (kept in the tab's ``sessionStorage``, sent as ``Authorization: Bearer``).
A strict Content-Security-Policy allows only its own scripts, styles and API calls.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class PageFiles(StaticFiles):
    """Static files with the page's security headers; revalidated on every load (a new release shows at once)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_web(app: FastAPI) -> None:
    """Mount the page at ``/ui/`` and send ``/`` there."""

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/")

    app.mount(PREFIX, PageFiles(directory=STATIC, html=True), name="web")
