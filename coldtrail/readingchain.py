"""The readings' hash chain: what each link covers, shared by ingest (which writes a link in
each batch's transaction) and ``audit verify`` (which recomputes every link from the rows).

A reading is covered as its canonical line: its columns in :data:`COLUMNS` order as
PostgreSQL's ``COPY ... TO STDOUT`` prints them in a session with ``TimeZone`` UTC,
``DateStyle`` ISO and ``extra_float_digits`` 1 (:data:`SESSION`). Ingest writes exactly those
lines (``coldtrail.ingest.copytext``), so what it hashes before COMMIT is what the server prints
back later, byte for byte, and verify needs no per-value formatting of its own: the server
prints, Python sorts and hashes.

A batch's link holds ``body``: SHA-256 over the batch id, the number of readings and their
lines sorted bytewise, each ended by a newline; ``hash`` is SHA-256 of the previous link's
hash and ``body``, made by the database under a lock that orders links by commit. Each
reading also gets an 8-byte fingerprint (the head of its line's SHA-256), stored in the link
in the same order: they only say *which* reading differs when a body does not match; the
chain's strength is the full SHA-256 over every byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

COLUMNS = (
    "sensor_id, seq, ts, gateway, status, clock, temperature_c, humidity_pct, battery_pct, "
    "latitude, longitude, speed_kmh, door_open, received_at"
)
SESSION = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL extra_float_digits = 1",
)
"""The settings under which the server prints a reading as its canonical line, for the
transaction that prints it."""
FINGERPRINT_BYTES = 8
GENESIS = bytes(32)


def body(batch_id: int, lines: Sequence[bytes]) -> bytes:
    """SHA-256 over a batch's readings: ``lines`` sorted bytewise, without their newlines."""
    h = hashlib.sha256(f"{batch_id}\n{len(lines)}\n".encode())
    h.update(b"\n".join(lines))
    if lines:
        h.update(b"\n")
    return h.digest()


def fingerprints(lines: Sequence[bytes]) -> bytes:
    """Each line's fingerprint, in the order given."""
    sha = hashlib.sha256
    return b"".join([sha(line).digest()[:FINGERPRINT_BYTES] for line in lines])


def link(prev: bytes, body_hash: bytes) -> bytes:
    """A link's hash: the same as ``coldtrail_link_readings`` computes in SQL."""
    return hashlib.sha256(prev + body_hash).digest()
