"""``GET /api/v1/stream``: the push stream for live dashboards (see :mod:`coldtrail.api.stream`).

No `from __future__ import annotations`: FastAPI reads the annotations at run time.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from coldtrail.api.stream import STREAM_TYPES, StreamFilter, StreamHub, frames, parse_types
from coldtrail.clock import Clock
from coldtrail.erp.people import Role, User

_TYPE = "|".join(STREAM_TYPES)
_SEGMENT = r"^[A-Za-z0-9_.-]{1,64}$"

DESCRIPTION = """Server-Sent Events (`text/event-stream`) of live readings, gateway status, and
the alarms, excursions, holds, CAPA and lot events ColdTrail raises.

Each event is `event: <type>` and `data: <one JSON line>`, with an `id`:

- `readings`: `{"site", "gateway", "readings": [{"sensor", "seq", "ts", "status",
  "temperature_c", ...}]}`, as the gateway sent them (the live view: a reading shows here
  before it is stored);
- `status`: a gateway's `{"site", "gateway", "state": "online"|"offline", "ts", ...}`;
- `alarm`, `excursion`, `hold`, `capa`, `lot`: the CloudEvents 1.0 document also published
  on MQTT (`type` is the kind, e.g. `hold.placed`);
- `feed`: the API lost or regained the broker, so a quiet stream is never mistaken for a
  quiet warehouse.

Control events have no id: `ready` first (stream id, broker state, how many missed events
were replayed, when the token expires); `reset` when missed events can't be replayed (reload
`GET /live`); `lagged` when the client fell too far behind, `expired` when its token did
(sign in again), `revoked` when it was revoked (a password change, a disabled account, a
sign-out everywhere; noticed within the keepalive interval), each followed by the end of the
stream. Reconnect with `Last-Event-ID` to
get what was missed. A comment line (`: keepalive`) goes out when nothing else has for a
while, so proxies keep the connection open."""


EVENT_SCHEMA = {
    "description": "one event of the stream",
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": [*STREAM_TYPES, "feed", "ready", "reset", "lagged", "expired", "revoked"],
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": r"^[0-9a-f]{8}-[0-9]+$"},
    },
}


def register(
    app: FastAPI,
    *,
    hub: Callable[[], StreamHub | None],
    allow: Callable[[frozenset[Role]], Callable[..., User]],
    token_expiry: Callable[[str], datetime | None],
    still_valid: Callable[[User], Awaitable[bool]],
    bearer: Callable[..., Awaitable[str | None]],
    clock: Clock,
    keepalive_s: float,
) -> None:
    @app.get(
        "/api/v1/stream",
        tags=["live"],
        summary="Push stream of readings, alarms and holds (Server-Sent Events)",
        description=DESCRIPTION,
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "an endless event stream",
                "content": {
                    "text/event-stream": {
                        "schema": EVENT_SCHEMA,
                        "example": (
                            'event: ready\ndata: {"stream":"3f9a1c2e","mqtt":"connected",'
                            '"replayed":0,"token_expires_at":"2026-11-22T10:15:00.000Z"}\n\n'
                            "id: 3f9a1c2e-41\nevent: readings\n"
                            'data: {"site":"wh1","gateway":"gw-wh1","readings":[{"sensor":'
                            '"S-0001","seq":1041,"ts":"2026-11-22T10:00:00Z","status":"ok",'
                            '"temperature_c":4.21}]}\n\n'
                        ),
                    }
                },
            },
            503: {"description": "the API has no broker to stream from (no MQTT URL set)"},
        },
    )
    async def stream(
        user: Annotated[User, Depends(allow(frozenset(Role)))],
        token: Annotated[str | None, Depends(bearer)],
        types: Annotated[
            str | None,
            Query(
                pattern=rf"^({_TYPE})(,({_TYPE}))*$",
                description="comma-separated types to receive; all if absent",
                examples=["readings,alarm,hold"],
            ),
        ] = None,
        site: Annotated[
            str | None,
            Query(pattern=_SEGMENT, description="only this site's readings and status"),
        ] = None,
        gateway: Annotated[
            str | None,
            Query(
                pattern=_SEGMENT,
                description="only this gateway's readings and status (one vehicle, say)",
            ),
        ] = None,
        max_events: Annotated[
            int | None,
            Query(ge=1, description="end the stream after this many events, `ready` included"),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Header(max_length=64, description="the last id received, to resume after it"),
        ] = None,
    ) -> StreamingResponse:
        the_hub = hub()
        if the_hub is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "push stream not available: the API has no MQTT broker (COLDTRAIL_MQTT_URL)",
            )
        expires_at = token_expiry(token or "")
        if expires_at is None:  # checked by allow() already; kept so a change there can't skip it
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated")
        flt = StreamFilter(parse_types(types), site, gateway)
        sub, resume = the_hub.subscribe(flt, last_event_id)
        body = frames(
            the_hub,
            sub,
            resume,
            clock=clock,
            expires_at=expires_at,
            keepalive_s=keepalive_s,
            max_events=max_events,
            still_valid=lambda: still_valid(user),
        )
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            # No caching, and no buffering in a proxy (nginx honours X-Accel-Buffering).
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
