"""The check of the readings' hash chain (:mod:`coldtrail.readingchain`): every link
recomputed from the stored rows, in one snapshot.

The server prints each window of batches' readings with one ``COPY ... TO STDOUT`` in the
canonical session, each line led by its batch id; Python groups, sorts and hashes them. Only
a batch whose body differs is looked at reading by reading, through its fingerprints, to name
the sensor and sequence number changed, added or removed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from coldtrail import readingchain as rc
from coldtrail.erp import queries as q
from coldtrail.erp.tx import Conn

WINDOW_READINGS = 200_000
"""Readings printed and hashed at a time: bounds verify's memory whatever the history."""


@dataclass(frozen=True)
class Link:
    link: int
    batch_id: int
    readings: int
    body: bytes
    prev_hash: bytes
    hash: bytes
    first_ts: datetime | None
    last_ts: datetime | None


@dataclass
class ReadingsCheck:
    ok: bool = True
    links: int = 0
    readings: int = 0
    head: str = rc.GENESIS.hex()
    """Hex hash of the last link checked: compare it with an anchor kept elsewhere."""
    head_link: int = 0
    first_broken_link: int | None = None
    batch_id: int | None = None
    reason: str | None = None
    findings: list[str] = field(default_factory=list)
    """What differs in the first broken batch, reading by reading (at most ten)."""

    def fail(self, link: Link | None, reason: str, findings: Sequence[str] = ()) -> ReadingsCheck:
        self.ok = False
        if link is not None:
            self.first_broken_link, self.batch_id = link.link, link.batch_id
        self.reason = reason
        self.findings = list(findings)[:10]
        return self


def verify_readings(
    conn: Conn, *, since: datetime | None = None, window: int = WINDOW_READINGS
) -> ReadingsCheck:
    """Recompute every link (or those written from ``since`` on, starting from the hash the
    first of them names) and name the first that does not fit. Every reading stored must
    belong to a link (checked over the whole table unless ``since`` is given), and the head
    must name the last link."""
    check = ReadingsCheck()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for stmt in rc.SESSION:
            conn.execute(stmt)
        expected: bytes | None = rc.GENESIS if since is None else None
        for links in _windows(conn, since, window):
            for ln in links:
                if expected is not None and ln.prev_hash != expected:
                    return check.fail(
                        ln,
                        f"link {ln.link} (batch {ln.batch_id}) does not follow link "
                        f"{check.head_link}: a link before it was removed, added or changed",
                    )
                if rc.link(ln.prev_hash, ln.body) != ln.hash:
                    return check.fail(ln, f"link {ln.link} (batch {ln.batch_id}) was changed")
                expected = ln.hash
            broken = _check_bodies(conn, links, _print(conn, links))
            if broken is not None:
                ln, reason, findings = broken
                return check.fail(ln, reason, findings)
            check.links += len(links)
            check.readings += sum(ln.readings for ln in links)
            check.head, check.head_link = links[-1].hash.hex(), links[-1].link
        head = conn.execute(q.READING_CHAIN_HEAD).fetchone()
        ends = head is not None and int(head[0]) == check.head_link
        if not ends and (since is None or check.links):
            return check.fail(
                None,
                f"the chain ends at link {check.head_link} but its head names link "
                f"{head[0] if head else '?'}: links at the end were removed",
            )
        if since is None:
            row = conn.execute(q.READINGS_COUNT).fetchone()
            stored = int(row[0]) if row else 0
            if stored != check.readings:
                loose = [
                    f"{s} seq {n} (batch {b})"
                    for s, n, b in conn.execute(q.READINGS_OUTSIDE_CHAIN).fetchall()
                ]
                return check.fail(
                    None,
                    f"{stored} readings are stored but the chain holds {check.readings}: "
                    + (
                        "readings outside any linked batch"
                        if loose
                        else "readings of a linked batch lie outside its time span"
                    ),
                    loose,
                )
    return check


def _windows(conn: Conn, since: datetime | None, window: int) -> Iterator[list[Link]]:
    """Links in order, in groups of at most ``window`` readings (one link may exceed it)."""
    group: list[Link] = []
    size = 0
    with conn.cursor(name="coldtrail_chain_verify") as cur:
        cur.itersize = 2000
        cur.execute(q.READING_CHAIN_LINKS, {"since": since})
        for row in cur:
            ln = Link(
                int(row[0]),
                int(row[1]),
                int(row[2]),
                bytes(row[3]),
                bytes(row[4]),
                bytes(row[5]),
                row[6],
                row[7],
            )
            if group and size + ln.readings > window:
                yield group
                group, size = [], 0
            group.append(ln)
            size += ln.readings
    if group:
        yield group


def _print(conn: Conn, links: list[Link]) -> dict[int, list[bytes]]:
    """The window's readings as canonical lines, by batch, each batch's sorted."""
    by_batch: dict[bytes, list[bytes]] = {}
    with conn.cursor().copy(q.COPY_READINGS_OF_BATCHES, _span(links)) as copy:
        for row in copy:
            batch, _, line = bytes(row[:-1]).partition(b"\t")
            lines = by_batch.get(batch)
            if lines is None:
                lines = by_batch[batch] = []
            lines.append(line)
    out = {int(batch): lines for batch, lines in by_batch.items()}
    for lines in out.values():
        lines.sort()
    return out


def _check_bodies(
    conn: Conn, links: list[Link], printed: dict[int, list[bytes]]
) -> tuple[Link, str, list[str]] | None:
    """The first link of the window whose readings are not what it covers, with why."""
    for ln in links:
        mine = printed.get(ln.batch_id, [])
        if len(mine) == ln.readings and rc.body(ln.batch_id, mine) == ln.body:
            continue
        return ln, *_what_differs(conn, ln, mine)
    return None


def _span(links: Sequence[Link]) -> dict[str, object]:
    """The batches and the time span their readings lie in (unbounded for batches of before
    ingest kept spans), so the lookup reads only the partitions or chunks they touched."""
    firsts = [ln.first_ts for ln in links]
    lasts = [ln.last_ts for ln in links]
    bounded = all(f is not None for f in firsts) and all(t is not None for t in lasts)
    return {
        "batches": [ln.batch_id for ln in links],
        "first": min(f for f in firsts if f is not None) if bounded else None,
        "last": max(t for t in lasts if t is not None) if bounded else None,
    }


def _what_differs(conn: Conn, ln: Link, lines: list[bytes]) -> tuple[str, list[str]]:
    row = conn.execute(q.READING_CHAIN_FINGERPRINTS, {"link": ln.link}).fetchone()
    theirs = _split(bytes(row[0]) if row else b"")
    mine = _split(rc.fingerprints(lines))
    findings: list[str] = []
    matcher = difflib.SequenceMatcher(None, theirs, mine, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        # Paired in order: as many changed as both sides hold, the rest added or removed.
        paired = min(i2 - i1, j2 - j1) if op == "replace" else 0
        findings += [f"{_key(lines[j])} was changed" for j in range(j1, j1 + paired)]
        findings += [f"{_key(lines[j])} was added" for j in range(j1 + paired, j2)]
        if i2 - i1 > paired:
            at = j1 + paired
            before = _key(lines[at - 1]) if at > 0 else "the start"
            after = _key(lines[at]) if at < len(lines) else "the end"
            findings.append(
                f"{i2 - i1 - paired} reading(s) removed, between {before} and {after} in the "
                "batch" + _missing(conn, lines, at)
            )
    summary = (
        f"batch {ln.batch_id} (link {ln.link}) holds {len(lines)} readings, its link "
        f"{ln.readings}, and they differ from what it covers"
    )
    if findings:
        summary += f": {findings[0]}"
    return summary, findings


def _split(fingerprints: bytes) -> list[bytes]:
    size = rc.FINGERPRINT_BYTES
    return [fingerprints[i : i + size] for i in range(0, len(fingerprints), size)]


def _key(line: bytes) -> str:
    sensor, seq, ts = line.split(b"\t", 3)[:3]
    return f"{sensor.decode('utf-8', 'backslashreplace')} seq {seq.decode()} at {ts.decode()}"


def _missing(conn: Conn, lines: list[bytes], at: int) -> str:
    """The numbers of the sensors on either side of a removed run (before line ``at``) that
    ingest claimed (``sensor_latest``) but that no reading holds now."""
    sensors = {lines[j].split(b"\t", 1)[0] for j in (at - 1, at) if 0 <= j < len(lines)}
    found = []
    for sensor in sorted(sensors):
        name = sensor.decode("utf-8", "backslashreplace")
        seqs = [int(r[0]) for r in conn.execute(q.CLAIMED_NOT_STORED, {"sensor": name})]
        if seqs:
            found.append(f"sensor {name} seq {', '.join(map(str, seqs))}")
    return f": {'; '.join(found)} claimed but not stored" if found else ""
