"""Routes of the continuous record: a shipment's, or a location's over a period, as JSON,
CSV, PDF or EPCIS 2.0 JSON-LD.

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse

from coldtrail.api import models, web
from coldtrail.api import record as rec
from coldtrail.api.erp_routes import EVERYONE, PREFIX, Deps
from coldtrail.api.limits import Gate
from coldtrail.erp.people import User
from coldtrail.erp.tx import Conn

FormatQuery = Annotated[
    rec.Format,
    Query(alias="format", description="json (default), csv, pdf or epcis (EPCIS 2.0 JSON-LD)"),
]


def _responses() -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "the record; every form carries the same numbers and the SHA-256 "
            "of the CSV form's bytes",
            "model": models.RecordOut,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "application/ld+json": {"schema": {"type": "object"}},
            },
        },
        404: {"description": "no such shipment or location"},
        503: {"description": "too many records being sent at once: try again (Retry-After)"},
        409: {"description": "no record yet (a shipment not loaded), or a period too long"},
        422: {"description": "a malformed period or format"},
    }


def _send(record: rec.Record, fmt: rec.Format, name: str, gate: Gate) -> Response:
    # Streamed: the record (numpy columns) is held, its text only a chunk at a time. The
    # hash, in a header and in every form, is taken first, in a pass that keeps nothing.
    return StreamingResponse(
        gate.leave_after(rec.chunks(record, fmt)),
        media_type=rec.MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": web.attachment(f"{name}.{rec.SUFFIXES[fmt]}"),
            "X-Data-SHA256": record.data_sha256,
            # Where the chains stood when it was built, for a check against the anchors.
            "X-Chain-Heads": f"audit={record.heads.audit_id}:{record.heads.audit_hash},"
            f"readings={record.heads.link}:{record.heads.readings_hash}",
        },
    )


def register(app: FastAPI, deps: Deps, gate: Gate) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Anyone = Annotated[User, Depends(deps.allow(EVERYONE))]

    def send(build: Callable[[], rec.Record], fmt: rec.Format, name: str) -> Response:
        if not gate.enter():
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "too many records are being sent at once: try again shortly",
                headers={"Retry-After": "10"},
            )
        try:
            record = build()
        except BaseException:
            gate.leave()
            raise
        return _send(record, fmt, name, gate)

    @app.get(
        PREFIX + "/shipments/{shipment_id}/record",
        tags=["records"],
        response_class=Response,
        responses=_responses(),
    )
    def shipment_record(
        shipment_id: str, conn: Db, _: Anyone, fmt: FormatQuery = "json"
    ) -> Response:
        """From the first loading (or departure) to arrival, or to now while under way:
        every probe of the vehicle and its compartments, the lots carried, excursions with
        their holds and signatures, gaps, calibration status."""
        return send(
            lambda: rec.shipment_record(conn, shipment_id, deps.clock.now()),
            fmt,
            f"record-shipment-{shipment_id}",
        )

    @app.get(
        PREFIX + "/locations/{location_id}/record",
        tags=["records"],
        response_class=Response,
        responses=_responses(),
    )
    def location_record(
        location_id: str,
        conn: Db,
        _: Anyone,
        since: Annotated[models.Instant, Query(alias="from", description="start, RFC 3339")],
        until: Annotated[models.Instant, Query(alias="to", description="end (excluded), RFC 3339")],
        fmt: FormatQuery = "json",
    ) -> Response:
        """The location and its compartments over [from, to), at most 400 days."""
        return send(
            lambda: rec.location_record(conn, location_id, since, until, deps.clock.now()),
            fmt,
            f"record-location-{location_id}",
        )
