"""The pages a browser opens: ``/`` -> ``/dashboard``, ``/docs`` and ``/redoc``.

Every asset comes from the package (``service/static``, served under ``/static``): the
pages work on a machine with no internet. FastAPI's own ``/docs`` and ``/redoc`` load
Swagger UI and ReDoc from a CDN, so the app is built with ``docs_url=None`` and
``redoc_url=None`` and these routes take their place. None of them holds user data: an
access-control layer leaves ``OPEN_PATHS`` and ``OPEN_PREFIXES`` open.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_URL = "/static"
OPEN_PATHS = ("/", "/dashboard", "/docs", "/redoc", "/openapi.json")
OPEN_PREFIXES = (STATIC_URL + "/",)

_VENDOR = STATIC_URL + "/vendor"
# The pages may load only from the service: ReDoc's bundle also asks a CDN for the Redocly
# logo, which would tell a third party who reads the docs. The docs' HTML (FastAPI's) holds
# an inline script; the dashboard's does not. ReDoc runs its search in a blob: worker.
_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; script-src 'self'"
)
_DASHBOARD_HEADERS = {
    # the HTML names its assets by path: a new deploy must not be answered from a stale copy
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _POLICY,
}
_DOCS_POLICY = _POLICY + " 'unsafe-inline'; worker-src 'self' blob:"


def install_pages(app: FastAPI) -> None:
    """Add the redirect, the dashboard, the offline API docs and the static assets to ``app``
    (built with ``docs_url=None, redoc_url=None``)."""
    # compressed: Swagger UI's bundle is 1.7 MB as it is, 0.5 MB gzipped
    assets = GZipMiddleware(StaticFiles(directory=STATIC_DIR), minimum_size=1024)
    app.mount(STATIC_URL, assets, name="static")
    app.add_api_route("/", _root, methods=["GET"], include_in_schema=False)
    app.add_api_route("/dashboard", _dashboard, methods=["GET"], include_in_schema=False)
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    async def swagger_ui(request: Request) -> HTMLResponse:
        return _docs_policy(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - Swagger UI",
                swagger_js_url=f"{_VENDOR}/swagger-ui/swagger-ui-bundle.js",
                swagger_css_url=f"{_VENDOR}/swagger-ui/swagger-ui.css",
                swagger_favicon_url=f"{_VENDOR}/swagger-ui/favicon-32x32.png",
                # the validator badge would ask validator.swagger.io about the document
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    async def redoc(request: Request) -> HTMLResponse:
        return _docs_policy(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} - ReDoc",
                redoc_js_url=f"{_VENDOR}/redoc/redoc.standalone.js",
                redoc_favicon_url=f"{_VENDOR}/swagger-ui/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


async def _root(request: Request) -> Response:
    # a path alone: nothing from the request's Host reaches the Location header
    return RedirectResponse("/dashboard", status_code=307)


async def _dashboard(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "dashboard" / "index.html", headers=_DASHBOARD_HEADERS)


def _docs_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _DOCS_POLICY
    return page
