"""How large a request may be: a body past its limit is a 413 before the API reads it whole.
A 50 MB body used to be read, parsed and held; one CAPA with 8 MB of links held the audit
trail's head for 31 s, and every other writer waited."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024
"""A JSON or form body: the largest the API takes is a replay or a CAPA, far below."""
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Evidence files (multipart): a scanned report or a photo."""


class BodyLimit:
    """ASGI middleware: refuses a request whose body is over its limit with 413, from its
    Content-Length when it says, and while it is read when it does not (chunked)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip()
        limit = MAX_UPLOAD_BYTES if kind == b"multipart/form-data" else MAX_BODY_BYTES
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        refused = False
        started = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not refused:
                    refused = True
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            # Once the body is refused, whatever the app answers to its broken read (FastAPI
            # makes it a 400) is dropped for the 413 that says why.
            nonlocal started
            if refused and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not refused:
                raise
        if refused and not started:
            await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"detail":"request body over %d bytes: the limit"}' % limit
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Name in the OpenAPI document the refusals that come from outside the routes: 400 and
    413 on every operation that takes a body (one that can't be parsed, or too large), 412
    on every one that takes ``If-Match``."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                content = operation["requestBody"].get("content", {})
                limit = MAX_UPLOAD_BYTES if "multipart/form-data" in content else MAX_BODY_BYTES
                responses.setdefault("400", _detail("the body can't be parsed as its type says"))
                responses.setdefault("413", _detail(f"the body is over {limit >> 20} MiB"))
            headers = [p for p in operation.get("parameters", []) if p.get("in") == "header"]
            if any(p.get("name", "").lower() == "if-match" for p in headers):
                responses.setdefault(
                    "412", _detail("If-Match: the record changed since that version")
                )
    return openapi


def _detail(description: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class Gate:
    """At most ``at_once`` holders; the others wait up to ``wait_s`` and are then refused.
    For records: one of a year of readings holds about 230 MB until it is sent, so eight at
    once (the pool's size) could take two gigabytes."""

    def __init__(self, at_once: int, wait_s: float) -> None:
        self._slots = threading.BoundedSemaphore(at_once)
        self.wait_s = wait_s

    def enter(self) -> bool:
        return self._slots.acquire(timeout=self.wait_s)

    def leave(self) -> None:
        self._slots.release()

    def leave_after(self, chunks: Iterator[bytes]) -> Generator[bytes]:
        """``chunks``, leaving the gate when they are all sent or the client has gone."""
        try:
            yield from chunks
        finally:
            self.leave()
