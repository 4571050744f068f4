"""Routes of the rules stage: location excursions with what they touched, alarms (list,
acknowledge with a comment), alarm contacts, stability budgets, and replay ("what if").

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query

from coldtrail.api import models
from coldtrail.api import queries as api_q
from coldtrail.api.erp_routes import ADMIN, EVERYONE, OVERSIGHT, PREFIX, STOCK, Deps
from coldtrail.erp.people import User
from coldtrail.erp.tx import Conn
from coldtrail.errors import NotFound, RuleViolation
from coldtrail.rules import alarms, impact
from coldtrail.rules.notifiers import NOTIFIERS
from coldtrail.rules.ranges import RangePatch
from coldtrail.rules.replay import Report, replay

# A replay reads every reading of the period: a year of a large fleet is for the command line.
MAX_REPLAY = timedelta(days=92)

_LOCATION_EXCURSIONS = """
SELECT id, location_id, started_at, ended_at, last_seen_at, state::text, late, sensors,
       limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, mkt_c, capa_id,
       detected_at, revision
FROM location_excursions
WHERE (%(state)s::text IS NULL OR state::text = %(state)s)
  AND (%(location)s::text IS NULL OR location_id = %(location)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
"""

_IMPACTS = """
SELECT i.lot_id, l.gtin, l.lot_number, i.shipment_id, i.exposed_from, i.exposed_to, i.minutes,
       (SELECT h.id FROM holds h WHERE h.lot_id = i.lot_id
          AND h.excursion_id = i.location_excursion_id) AS hold_id
FROM excursion_impacts i JOIN lots l ON l.id = i.lot_id
WHERE i.location_excursion_id = %(id)s
ORDER BY i.lot_id
"""

_LOT_EXISTS = "SELECT 1 FROM lots WHERE id = %(id)s"


@dataclass(frozen=True)
class LocationExcursion:
    id: int
    location_id: str
    started_at: datetime
    ended_at: datetime | None
    last_seen_at: datetime
    state: str
    late: bool
    sensors: list[str]
    limit_min_c: float | None
    limit_max_c: float | None
    min_c: float
    max_c: float
    duration_s: float
    degree_minutes: float
    mkt_c: float | None
    capa_id: int | None
    detected_at: datetime
    revision: int


@dataclass(frozen=True)
class Impact:
    lot_id: int
    gtin: str
    lot_number: str
    shipment_id: str | None
    exposed_from: datetime
    exposed_to: datetime
    minutes: float
    hold_id: int | None


@dataclass(frozen=True)
class ExcursionDetail:
    excursion: LocationExcursion
    impacts: list[Impact]
    alarms: list[alarms.Alarm]
    probes: list[models.Excursion]
    """The probes' own excursions that make up this one (min, max, acknowledgement each)."""


@dataclass(frozen=True)
class BudgetOut:
    lot_id: int
    budget_min: int | None
    used_min: float
    remaining_min: float | None
    exhausted_at: datetime | None


def location_excursions(
    conn: Conn, state: str | None, location: str | None, after: int = 0, limit: int = 100
) -> list[LocationExcursion]:
    """Location excursions by id (shared by the API and the web console)."""
    rows = conn.execute(
        _LOCATION_EXCURSIONS,
        {"state": state, "location": location, "after": after, "limit": limit},
    ).fetchall()
    return [LocationExcursion(*r) for r in rows]


def excursion_detail(conn: Conn, excursion_id: int) -> ExcursionDetail:
    """One location excursion with the lots it touched, its alarms and its probes'."""
    rows = conn.execute(
        _LOCATION_EXCURSIONS.replace("AND id > %(after)s", "AND id = %(after)s"),
        {"state": None, "location": None, "after": excursion_id, "limit": 1},
    ).fetchall()
    if not rows:
        raise NotFound(f"no excursion {excursion_id}")
    impacts = [Impact(*r) for r in conn.execute(_IMPACTS, {"id": excursion_id})]
    raised = conn.execute(
        "SELECT id FROM alarms WHERE location_excursion_id = %s ORDER BY id", (excursion_id,)
    ).fetchall()
    probes = [
        models.Excursion.from_row(r)
        for r in conn.execute(api_q.PROBE_EXCURSIONS_OF, {"id": excursion_id})
    ]
    return ExcursionDetail(
        LocationExcursion(*rows[0]),
        impacts,
        [alarms.get_alarm(conn, r[0]) for r in raised],
        probes,
    )


def register(app: FastAPI, deps: Deps) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Anyone = Annotated[User, Depends(deps.allow(EVERYONE))]
    # Acknowledging stops an alarm's escalation: a write, which an auditor never makes.
    Staff = Annotated[User, Depends(deps.allow(STOCK))]
    Oversight = Annotated[User, Depends(deps.allow(OVERSIGHT))]
    Admin = Annotated[User, Depends(deps.allow(ADMIN))]
    refusals: dict[int | str, dict[str, Any]] = {
        404: {"description": "a record named does not exist"},
        409: {"description": "the record's state refuses it; detail says why"},
    }

    @app.get(PREFIX + "/location-excursions", tags=["excursions"])
    def list_location_excursions(
        conn: Db,
        _: Anyone,
        state: Annotated[str | None, Query(pattern="^(open|closed|withdrawn)$")] = None,
        location: str | None = None,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[LocationExcursion]:
        return location_excursions(conn, state, location, after, limit)

    @app.get(PREFIX + "/location-excursions/{excursion_id}", tags=["excursions"],
             responses=refusals)  # fmt: skip
    def get_location_excursion(
        excursion_id: Annotated[int, Path(ge=1)], conn: Db, _: Anyone
    ) -> ExcursionDetail:
        return excursion_detail(conn, excursion_id)

    @app.get(PREFIX + "/alarms", tags=["alarms"])
    def list_alarms(
        conn: Db,
        _: Anyone,
        active: Annotated[bool, Query(description="unacknowledged or still on")] = False,
        kind: str | None = None,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[alarms.Alarm]:
        return alarms.find_alarms(conn, active=active, kind=kind, after=after, limit=limit)

    @app.post(PREFIX + "/alarms/{alarm_id}/acknowledge", tags=["alarms"], responses=refusals)
    def acknowledge_alarm(
        alarm_id: Annotated[int, Path(ge=1)], body: models.AlarmAckIn, conn: Db, user: Staff
    ) -> alarms.Alarm:
        return alarms.acknowledge(conn, alarm_id, user.username, body.comment, deps.clock.now())

    @app.post(PREFIX + "/alarm-contacts", tags=["alarms"], status_code=201, responses=refusals)
    def add_alarm_contact(body: models.ContactIn, conn: Db, user: Admin) -> dict[str, int]:
        contact = alarms.Contact(
            name=body.name, channel=body.channel, target=body.target, level=body.level,
            after_min=body.after_min, site_id=body.site_id,
            kinds=tuple(body.kinds) if body.kinds else None,
        )  # fmt: skip
        return {"id": alarms.add_contact(conn, user.username, contact, set(NOTIFIERS))}

    @app.get(PREFIX + "/lots/{lot_id}/budget", tags=["products"], responses=refusals)
    def get_budget(lot_id: Annotated[int, Path(ge=1)], conn: Db, _: Anyone) -> BudgetOut:
        if conn.execute(_LOT_EXISTS, {"id": lot_id}).fetchone() is None:
            raise NotFound(f"no lot {lot_id}")
        b = impact.lot_budget(conn, lot_id)
        return BudgetOut(lot_id, b.budget_min, b.used_min, b.remaining_min, b.exhausted_at)

    @app.post(PREFIX + "/rules/replay", tags=["rules"], responses=refusals)
    def post_replay(body: models.ReplayIn, conn: Db, _: Oversight) -> Report:
        if body.until - body.since > MAX_REPLAY:
            raise RuleViolation(
                f"a replay over the API covers at most {MAX_REPLAY.days} days; "
                "use `coldtrail replay` for longer"
            )
        return replay(
            conn, body.since, body.until,
            profiles={k: RangePatch(**v.model_dump()) for k, v in body.profiles.items()},
            locations={k: RangePatch(**v.model_dump()) for k, v in body.locations.items()},
            sensors=body.sensors,
        )  # fmt: skip
