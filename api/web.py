"""Small pieces of HTTP the routes share: file downloads, and error bodies that can always be
written whatever the request held."""

from __future__ import annotations

import math
import os
import unicodedata
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from starlette.requests import Request

# Types a browser may show inline without running anything; the rest is sent as bytes.
SAFE_MEDIA_TYPES = frozenset(
    {"application/pdf", "image/jpeg", "image/png", "image/gif", "text/csv", "text/plain"}
)


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` for a download named ``filename`` (RFC 6266): an ASCII name
    for old clients and the exact name, UTF-8 and percent-encoded, for the rest. Chinese file
    names (报告 温度.pdf) travel whole; header values themselves must be Latin-1."""
    stem, suffix = os.path.splitext(filename)
    stem, suffix = _ascii(stem).strip(" ._") or "download", _ascii(suffix)
    ascii_name = stem + suffix
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c if c.isprintable() and c not in '"\\' else "_" for c in text)


def download_headers(filename: str, media_type: str) -> tuple[str, dict[str, str]]:
    """The media type to send a stored file as, and its headers: what an uploader said the
    file is counts only for types that can't carry a script, and the browser is told not to
    guess (``nosniff``)."""
    kind = media_type if media_type in SAFE_MEDIA_TYPES else "application/octet-stream"
    return kind, {"Content-Disposition": attachment(filename), "X-Content-Type-Options": "nosniff"}


def json_safe(value: Any) -> Any:
    """``value`` with what JSON can't carry made into text: NaN and infinities (a request may
    hold them; a 422 quotes the input back), lone surrogates, anything not a JSON type."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    return json_safe(str(value))


def client(request: Request) -> str:
    """The client's address, as the server saw it: failed passwords and throttles are kept per
    address. `coldtrail api` (uvicorn) takes X-Forwarded-For from a proxy on 127.0.0.1; a proxy
    elsewhere must be named in FORWARDED_ALLOW_IPS, or every client looks like the proxy."""
    return request.client.host if request.client else "unknown"


DOCS_ASSETS = "/docs-assets"


def offline_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the files of the ``swagger-ui-bundle`` package, not from
    a CDN: the page works at a site without internet, and no third party sees who reads it."""
    import swagger_ui_bundle  # type: ignore[import-untyped]
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(
        DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )
