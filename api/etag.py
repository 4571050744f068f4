"""Versions of records as entity tags, so two people editing one record don't overwrite each
other: GET answers with ``ETag``, a change sent with ``If-Match`` is refused with 412 when
the record changed in between. The tag is a digest of the record as the API shows it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from fastapi import Response

from coldtrail.errors import PreconditionFailed

IF_MATCH_DESCRIPTION = (
    "the ETag of the version this change is based on; 412 if the record changed since"
)


def etag(record: Any) -> str:
    is_instance = dataclasses.is_dataclass(record) and not isinstance(record, type)
    doc = dataclasses.asdict(record) if is_instance else record
    canonical = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def check(if_match: str | None, current: Any | None, what: str) -> None:
    """Refuse the change if ``If-Match`` names another version (``*``: any existing one)."""
    if if_match is None:
        return
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    if current is None:
        raise PreconditionFailed(f"{what} does not exist, so it can't match {if_match}")
    if "*" in tags or etag(current) in tags:
        return
    raise PreconditionFailed(
        f"{what} changed since you read it (now {etag(current)}): read it again and redo the change"
    )


def tagged(response: Response, record: Any) -> None:
    response.headers["ETag"] = etag(record)
