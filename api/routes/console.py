"""The web console at ``/`` (static ES modules, no build step) and the API docs served from local assets.

Everything the pages load ships in ``api/static``; nothing comes from a CDN, so both work offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_URL = "/static"
SWAGGER = f"{STATIC_URL}/vendor/swagger-ui"

# The console's own code only: no inline script, no third-party origin. Styles set through the CSSOM by the
# charting library are not affected by style-src.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
def console() -> FileResponse:
    """The console's single page (its routes live after the '#')."""
    return FileResponse(
        STATIC_DIR / "console" / "index.html",
        headers={
            "Content-Security-Policy": CONSOLE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


def docs_router(openapi_url: str, title: str) -> APIRouter:
    docs = APIRouter(include_in_schema=False)

    @docs.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
        )

    return docs


def install_console(app: FastAPI, api_prefix: str) -> None:
    """Mount the static assets, the console page and the offline docs on ``app``."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
    app.include_router(
        docs_router(app.openapi_url or f"{api_prefix}/openapi.json", app.title), prefix=api_prefix
    )
