"""Alarms: raised once per condition, escalated until a person acknowledges them.

Level 0 contacts are called as soon as an alarm is raised; the contacts of level n when the
alarm has gone ``after_min`` minutes without acknowledgement. Acknowledging needs a comment
and stops further calls. A notice a channel refuses is tried again with backoff.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg

from coldtrail.clock import Clock
from coldtrail.erp import outbox
from coldtrail.erp.tx import acting
from coldtrail.errors import Conflict, NotFound, RuleViolation
from coldtrail.rules import texts
from coldtrail.rules.conditions import Condition, Limits
from coldtrail.rules.notifiers import Notice, Notifier, NotifyError

Conn = psycopg.Connection[tuple[Any, ...]]
log = logging.getLogger(__name__)

RETRY_S = (30.0, 120.0, 600.0)

_UPSERT = """
INSERT INTO alarms (key, kind, sensor_id, location_id, location_excursion_id, started_at,
    ended_at, message, detail, raised_at)
VALUES (%(key)s, %(kind)s, %(sensor)s, %(location)s, %(le)s, %(started_at)s, %(ended_at)s,
    %(message)s, %(detail)s, %(now)s)
ON CONFLICT (key) DO UPDATE SET ended_at = EXCLUDED.ended_at, message = EXCLUDED.message,
    detail = EXCLUDED.detail
WHERE alarms.ended_at IS DISTINCT FROM EXCLUDED.ended_at
   OR alarms.message IS DISTINCT FROM EXCLUDED.message
RETURNING id, xmax = 0
"""

_END = """
UPDATE alarms SET ended_at = %(at)s WHERE id = %(id)s AND ended_at IS NULL RETURNING id
"""

# Assigned sensors with their last reading: silent ones are offline. A silence counts from
# when the worker began watching at the earliest: after a restart (the demo's, a deployment's)
# the gateways get the offline limit to be heard before anyone is called.
_SILENT = """
SELECT s.id, a.location_id, coalesce(last.ts, lower(a.valid))
FROM sensors s
JOIN sensor_assignments a ON a.sensor_id = s.id AND a.valid @> %(now)s::timestamptz
LEFT JOIN LATERAL (SELECT max(r.ts) AS ts FROM readings r WHERE r.sensor_id = s.id) last ON true
WHERE greatest(coalesce(last.ts, lower(a.valid)), %(watching_since)s::timestamptz)
      < %(now)s::timestamptz - make_interval(secs => %(after)s)
"""

_OFFLINE_HEARD_AGAIN = """
SELECT a.id, (SELECT min(r.ts) FROM readings r
              WHERE r.sensor_id = a.sensor_id AND r.ts > a.started_at)
FROM alarms a WHERE a.kind = 'offline' AND a.ended_at IS NULL
"""

# Offline alarms (ended or not) whose silence the record no longer shows: a reading, come
# late, follows the last one before the silence within the offline limit.
_OFFLINE_FILLED = """
SELECT a.id, next.ts FROM alarms a
CROSS JOIN LATERAL (SELECT min(r.ts) AS ts FROM readings r
                    WHERE r.sensor_id = a.sensor_id AND r.ts > a.started_at
                      AND r.ts <= a.started_at + make_interval(secs => %(after)s)) next
WHERE a.kind = 'offline' AND a.withdrawn_at IS NULL AND next.ts IS NOT NULL
"""

# Gap alarms of these sensors lying wholly within the span just judged again.
_GAP_ALARMS_IN = """
SELECT a.id, a.key, a.sensor_id, a.started_at, a.ended_at
FROM alarms a
JOIN unnest(%(sensors)s::text[], %(firsts)s::timestamptz[], %(lasts)s::timestamptz[])
     AS w(sensor_id, first, last) ON w.sensor_id = a.sensor_id
WHERE a.kind = 'record_interval' AND a.withdrawn_at IS NULL
  AND a.started_at >= w.first AND a.ended_at <= w.last
"""

_WITHDRAW = """
UPDATE alarms SET withdrawn_at = %(now)s, withdrawn_reason = %(reason)s
WHERE id = %(id)s AND withdrawn_at IS NULL RETURNING id
"""

_OVERDUE = """
SELECT s.id, a.location_id, s.calibration_due
FROM sensors s
JOIN sensor_assignments a ON a.sensor_id = s.id AND a.valid @> %(now)s::timestamptz
WHERE s.calibration_due < %(today)s
"""

_CALIBRATED_AGAIN = """
SELECT a.id FROM alarms a JOIN sensors s ON s.id = a.sensor_id
WHERE a.kind = 'calibration_overdue' AND a.ended_at IS NULL
  AND (s.calibration_due IS NULL OR s.calibration_due >= %(today)s
       OR a.started_at <> (s.calibration_due::timestamp AT TIME ZONE 'UTC'))
"""

# Contacts now due for each unacknowledged alarm that have not been called for it yet.
_DUE_CONTACTS = """
INSERT INTO alarm_notifications (alarm_id, contact_id, level, next_attempt_at)
SELECT a.id, c.id, c.level, %(now)s
FROM alarms a
LEFT JOIN locations l ON l.id = a.location_id
JOIN alarm_contacts c ON (c.site_id IS NULL OR c.site_id = l.site_id)
                     AND (c.kinds IS NULL OR a.kind = ANY(c.kinds))
WHERE a.acknowledged_at IS NULL AND a.withdrawn_at IS NULL
  AND a.raised_at + make_interval(mins => c.after_min) <= %(now)s
ON CONFLICT (alarm_id, contact_id) DO NOTHING
RETURNING alarm_id, level
"""

_RAISE_LEVEL = """
UPDATE alarms SET level = %(level)s WHERE id = %(id)s AND level < %(level)s RETURNING id
"""

_DUE_NOTICES = """
SELECT n.id, c.channel, c.target, c.name, n.level, n.attempts, a.id, a.kind::text, a.message,
       a.sensor_id, a.location_id, a.started_at, a.ended_at, a.raised_at, a.detail,
       coalesce(s.timezone, 'UTC')
FROM alarm_notifications n
JOIN alarms a ON a.id = n.alarm_id
JOIN alarm_contacts c ON c.id = n.contact_id
LEFT JOIN locations l ON l.id = a.location_id
LEFT JOIN sites s ON s.id = l.site_id
WHERE n.sent_at IS NULL AND n.next_attempt_at <= %(now)s AND a.acknowledged_at IS NULL
  AND a.withdrawn_at IS NULL
ORDER BY n.next_attempt_at, n.id
LIMIT 100
FOR UPDATE OF n SKIP LOCKED
"""

_SENT = (
    "UPDATE alarm_notifications SET sent_at = %(now)s, attempts = attempts + 1 WHERE id = %(id)s"
)

_FAILED = """
UPDATE alarm_notifications SET attempts = attempts + 1, last_error = %(error)s,
    next_attempt_at = %(next)s
WHERE id = %(id)s
"""

_ACK = """
UPDATE alarms SET acknowledged_by = %(user)s, acknowledged_at = %(now)s, ack_comment = %(comment)s
WHERE id = %(id)s AND acknowledged_at IS NULL
RETURNING id
"""

_ALARM_COLUMNS = """id, kind::text, sensor_id, location_id, location_excursion_id, started_at,
ended_at, message, detail, raised_at, level, acknowledged_by, acknowledged_at, ack_comment,
withdrawn_at, withdrawn_reason"""

_ALARM = f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE id = %(id)s"  # noqa: S608

_ALARMS = f"""
SELECT {_ALARM_COLUMNS} FROM alarms
WHERE (%(active)s IS NOT TRUE
       OR (withdrawn_at IS NULL AND (acknowledged_at IS NULL OR ended_at IS NULL)))
  AND (%(kind)s::text IS NULL OR kind::text = %(kind)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
"""  # noqa: S608 - a constant column list

_INSERT_CONTACT = """
INSERT INTO alarm_contacts (site_id, level, after_min, name, channel, target, kinds)
VALUES (%(site)s, %(level)s, %(after_min)s, %(name)s, %(channel)s, %(target)s, %(kinds)s)
RETURNING id
"""


@dataclass(frozen=True)
class Alarm:
    id: int
    kind: str
    sensor_id: str | None
    location_id: str | None
    location_excursion_id: int | None
    started_at: datetime
    ended_at: datetime | None
    message: str
    detail: dict[str, Any]
    raised_at: datetime
    level: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_comment: str | None
    withdrawn_at: datetime | None = None
    withdrawn_reason: str | None = None
    """Set when the record no longer supports it (late readings filled the gap)."""

    def event(self) -> dict[str, Any]:
        return {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()
        }


@dataclass(frozen=True)
class Contact:
    name: str
    channel: str
    target: str
    level: int = 0
    after_min: int = 0
    site_id: str | None = None
    kinds: tuple[str, ...] | None = None


_CONTACTS = """
SELECT id, name, channel, target, level, after_min, site_id, kinds::text[]
FROM alarm_contacts ORDER BY coalesce(site_id, ''), level, id
"""


def contacts(conn: Conn) -> list[tuple[int, Contact]]:
    """Every alarm contact, by site and level (targets as stored: redact before showing)."""
    return [
        (r[0], Contact(r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7]) if r[7] else None))
        for r in conn.execute(_CONTACTS)
    ]


def add_contact(conn: Conn, actor: str, contact: Contact, known_channels: set[str]) -> int:
    if contact.channel not in known_channels:
        raise RuleViolation(
            f"unknown channel {contact.channel!r}; known: {', '.join(sorted(known_channels))}"
        )
    if contact.level == 0 and contact.after_min:
        raise RuleViolation("level 0 contacts are called at once (after_min 0)")
    with acting(conn, actor):
        row = conn.execute(
            _INSERT_CONTACT,
            {
                "site": contact.site_id,
                "level": contact.level,
                "after_min": contact.after_min,
                "name": contact.name,
                "channel": contact.channel,
                "target": contact.target,
                "kinds": list(contact.kinds) if contact.kinds else None,
            },
        ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
    return int(row[0])


def upsert(
    conn: Conn, condition: Condition, now: datetime, *, location_excursion: int | None = None
) -> int | None:
    """Raise the condition's alarm, or bring its end and message up to date; returns the
    alarm's id when something changed."""
    row = conn.execute(
        _UPSERT,
        {
            "key": condition.key,
            "kind": condition.kind,
            "sensor": condition.sensor or None,
            "location": condition.location,
            "le": location_excursion,
            "started_at": condition.started_at,
            "ended_at": condition.ended_at,
            "message": condition.message,
            "detail": json.dumps(condition.detail),
            "now": now,
        },
    ).fetchone()
    if row is None:
        return None
    alarm = get_alarm(conn, int(row[0]))
    if row[1]:
        log.warning("alarm %d raised: %s", alarm.id, alarm.message)
        outbox.emit(conn, "alarm.raised", f"alarm/{alarm.id}", alarm.event(), now)
    elif alarm.ended_at is not None:
        outbox.emit(conn, "alarm.cleared", f"alarm/{alarm.id}", alarm.event(), now)
    return alarm.id


def end(conn: Conn, alarm_id: int, at: datetime, now: datetime) -> None:
    if conn.execute(_END, {"id": alarm_id, "at": at}).fetchone() is not None:
        outbox.emit(
            conn, "alarm.cleared", f"alarm/{alarm_id}", get_alarm(conn, alarm_id).event(), now
        )


def withdraw(conn: Conn, alarm_id: int, reason: str, now: datetime) -> bool:
    """Withdraw an alarm the record no longer supports, with the reason; no one is called
    for it any more. Returns whether it was withdrawn now."""
    if conn.execute(_WITHDRAW, {"id": alarm_id, "reason": reason, "now": now}).fetchone() is None:
        return False
    alarm = get_alarm(conn, alarm_id)
    log.warning("alarm %d withdrawn: %s", alarm_id, reason)
    outbox.emit(conn, "alarm.withdrawn", f"alarm/{alarm_id}", alarm.event(), now)
    return True


def withdraw_filled_gaps(
    conn: Conn,
    found: Sequence[Condition],
    spans: dict[str, tuple[datetime, datetime]],
    now: datetime,
) -> int:
    """Withdraw the gap alarms (``record_interval``) of the sensors just judged again whose
    gap lies wholly in the span judged (first to last reading) and is no longer found: late
    readings filled it. Where part of it remains, that part is found again as an alarm of
    its own, named in the reason."""
    if not spans:
        return 0
    sensors = sorted(spans)
    keys = {c.key for c in found}
    remaining = [c for c in found if c.kind == "record_interval"]
    withdrawn = 0
    for alarm_id, key, sensor, started, ended in conn.execute(
        _GAP_ALARMS_IN,
        {
            "sensors": sensors,
            "firsts": [spans[s][0] for s in sensors],
            "lasts": [spans[s][1] for s in sensors],
        },
    ).fetchall():
        if key in keys:
            continue
        left = [
            c for c in remaining
            if c.sensor == sensor and c.started_at < ended and (c.ended_at or now) > started
        ]  # fmt: skip
        reason = f"late readings of {sensor} filled the gap from {started.isoformat()}"
        if left:
            rest = ", ".join(f"{c.started_at.isoformat()} to {c.ended_at}" for c in left)
            reason += f"; what remains of it ({rest}) is an alarm of its own"
        withdrawn += withdraw(conn, alarm_id, reason, now)
    return withdrawn


def check_timers(
    conn: Conn, now: datetime, limits: Limits, *, watching_since: datetime | None = None
) -> int:
    """Raise or clear what needs no reading: silent sensors, overdue calibrations; withdraw
    the offline alarms whose silence late readings filled. Returns how many alarms were
    raised or changed."""
    changed = 0
    for alarm_id, heard in conn.execute(
        _OFFLINE_FILLED, {"after": limits.offline_after_s}
    ).fetchall():
        reason = (
            f"late readings filled the silence: the record has a reading at {heard.isoformat()}"
        )
        changed += withdraw(conn, alarm_id, reason, now)
    for alarm_id, heard in conn.execute(_OFFLINE_HEARD_AGAIN).fetchall():
        if heard is not None:
            end(conn, alarm_id, heard, now)
            changed += 1
    for sensor, location, last in conn.execute(
        _SILENT, {"now": now, "after": limits.offline_after_s, "watching_since": watching_since}
    ).fetchall():
        silent_min = (now - last).total_seconds() / 60
        condition = Condition(
            "offline", sensor, location, last, None,
            f"sensor {sensor} silent since {last.isoformat()} ({silent_min:.0f} min)",
            {"last_reading": last.isoformat()},
        )  # fmt: skip
        # The message grows with the silence; only a new silence is a new alarm.
        if conn.execute("SELECT 1 FROM alarms WHERE key = %s", (condition.key,)).fetchone():
            continue
        changed += upsert(conn, condition, now) is not None
    today = now.date()
    for (alarm_id,) in conn.execute(_CALIBRATED_AGAIN, {"today": today}).fetchall():
        end(conn, alarm_id, now, now)
        changed += 1
    for sensor, location, due in conn.execute(_OVERDUE, {"now": now, "today": today}):
        condition = Condition(
            "calibration_overdue", sensor, location,
            datetime.combine(due, time(), tzinfo=UTC), None,
            f"sensor {sensor} calibration was due {due.isoformat()}",
            {"calibration_due": due.isoformat()},
        )  # fmt: skip
        # Keyed by the due date: a later due date that lapses again is a new alarm.
        changed += upsert(conn, condition, now) is not None
    return changed


def acknowledge(conn: Conn, alarm_id: int, user: str, comment: str, now: datetime) -> Alarm:
    if not comment.strip():
        raise RuleViolation("acknowledging an alarm needs a comment: what was seen, what is done")
    with acting(conn, user):
        if (
            conn.execute(
                _ACK, {"id": alarm_id, "user": user, "now": now, "comment": comment}
            ).fetchone()
            is None
        ):
            get_alarm(conn, alarm_id)  # NotFound if there is none
            raise Conflict(f"alarm {alarm_id} is already acknowledged")
        alarm = get_alarm(conn, alarm_id)
        outbox.emit(conn, "alarm.acknowledged", f"alarm/{alarm_id}", alarm.event(), now)
        return alarm


def get_alarm(conn: Conn, alarm_id: int) -> Alarm:
    row = conn.execute(_ALARM, {"id": alarm_id}).fetchone()
    if row is None:
        raise NotFound(f"no alarm {alarm_id}")
    return Alarm(*row)


def find_alarms(
    conn: Conn, *, active: bool = False, kind: str | None = None, after: int = 0, limit: int = 100
) -> list[Alarm]:
    rows = conn.execute(
        _ALARMS, {"active": active, "kind": kind, "after": after, "limit": limit}
    ).fetchall()
    return [Alarm(*r) for r in rows]


class AlarmDesk:
    """Calls the contacts of unacknowledged alarms as they fall due; one ``tick`` a pass."""

    def __init__(self, notifiers: dict[str, Notifier], clock: Clock) -> None:
        self._notifiers = notifiers
        self._clock = clock
        self._warned: set[str] = set()

    def tick(self, conn: Conn) -> int:
        """Schedule the calls now due, make them; returns how many notices went out."""
        now = self._clock.now()
        with conn.transaction():
            for alarm_id, level in conn.execute(_DUE_CONTACTS, {"now": now}).fetchall():
                if (
                    level > 0
                    and conn.execute(_RAISE_LEVEL, {"id": alarm_id, "level": level}).fetchone()
                ):
                    alarm = get_alarm(conn, alarm_id)
                    log.warning("alarm %d escalated to level %d", alarm_id, level)
                    outbox.emit(conn, "alarm.escalated", f"alarm/{alarm_id}", alarm.event(), now)
        sent = 0
        with conn.transaction():
            for row in conn.execute(_DUE_NOTICES, {"now": now}).fetchall():
                sent += self._send(conn, row, now)
        return sent

    def _send(self, conn: Conn, row: tuple[Any, ...], now: datetime) -> int:
        notice_id, channel, target, name, level, attempts = row[:6]
        alarm_id, kind, message, sensor, location, started, ended, raised, detail, tz = row[6:]
        zh = texts.chinese(texts.Said(kind, detail, location, sensor, started, texts.zone(tz)))
        notice = Notice(alarm_id, kind, level, message, sensor, location, started, ended, raised,
                        message_zh=zh)  # fmt: skip
        notifier = self._notifiers.get(channel)
        try:
            _send_one(notifier, channel, target, notice)
        except NotifyError as exc:
            delay = RETRY_S[min(attempts, len(RETRY_S) - 1)]
            conn.execute(
                _FAILED,
                {"id": notice_id, "error": str(exc), "next": now + timedelta(seconds=delay)},
            )
            if f"{channel}:{target}" not in self._warned:
                self._warned.add(f"{channel}:{target}")
                log.error(  # noqa: TRY400 - the reason is the message; no traceback wanted
                    "alarm %d: %s (%s) not reached: %s", notice.alarm, name, channel, exc
                )
            return 0
        self._warned.discard(f"{channel}:{target}")
        conn.execute(_SENT, {"id": notice_id, "now": now})
        return 1


def _send_one(notifier: Notifier | None, channel: str, target: str, notice: Notice) -> None:
    if notifier is None:
        raise NotifyError(f"channel {channel!r} is not configured here")
    notifier.send(target, notice)
