"""The console's session, its forms' CSRF tokens and the headers every page carries.

The session is the API's own bearer token (coldtrail.api.auth), kept in an HttpOnly,
SameSite=Strict cookie: the API reads it on reads only, the console on its pages. A page
renews it while it is used, so it expires after ``ttl`` of no use (logging out, changing a
password or being disabled ends it at once: the token's generation no longer counts).

Every form carries a token derived from the session (HMAC of it under the server's key), so a
form posted from another site is refused even by a browser that would send the cookie; the
login form, before any session, uses a random token in a cookie of its own (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from coldtrail.api.auth import SESSION_COOKIE

LOGIN_CSRF_COOKIE = "ct_login_csrf"
LANGUAGE_COOKIE = "ct_lang"

# No inline script or style anywhere: what a page runs comes from /static, nothing else.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def csrf_token(secret: str, session: str) -> str:
    return hmac.new(secret.encode(), b"csrf:" + session.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, session: str | None, presented: str | None) -> bool:
    if not session or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret, session), presented)


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def login_csrf_ok(request: Request, presented: str | None) -> bool:
    kept = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(kept and presented and hmac.compare_digest(kept, presented))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str, ttl_s: int) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, max_age=ttl_s, httponly=True, samesite="strict",
        secure=_secure(request), path="/",
    )  # fmt: skip


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def set_login_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
        secure=_secure(request), path="/login",
    )  # fmt: skip


def set_language(response: Response, request: Request, language: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE, language, max_age=365 * 86400, httponly=True, samesite="strict",
        secure=_secure(request), path="/",
    )  # fmt: skip
