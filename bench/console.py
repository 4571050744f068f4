"""The web console over real HTTP: the live board of 10 000 sensors and an excursion page
whose chart covers 30 days of a probe (43 200 readings), as a signed-in browser asks for
them (session cookie), the goods page of a busy warehouse (2 000 lots in store, 50 planned
shipments), and the weight of a page without its data.

A scratch database holds bench.live's fleet (one site, 200 cold rooms, 25 trucks, 10 000
sensors with a latest reading) and one ambient store whose probe read 26 °C once a minute for
30 days: one location excursion of 30 days, so its page draws all of it. The API runs as
``coldtrail api`` in a process of its own. After a warm-up, 20 requests of each page one
after the other, from request to last byte; the median and the slowest (p99 of 20).

Drawing a board's rows from a new live document (at most every 2 s; the rows are kept with
the document they were drawn from) is timed apart, in process. References, in the same run:
the board against ``GET /api/v1/live`` (the document it is drawn from), the excursion page
against the same 30 days as the record's JSON (``GET /api/v1/locations/{id}/record``).
Goals: each page under 300 ms (p99, warm); a page without data (the login page, its
stylesheet and scripts) under 300 KB.

    .venv/bin/python -m bench.console [--sensors 10000]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx2
import numpy as np
import psycopg

from bench._api import ADMIN_PW, running_api
from bench._db import drop_database, make_database
from bench.live import _fill
from coldtrail.api.live import LiveBuilder
from coldtrail.console.board import Board

RUNS = 20
DAYS = 30


def _month_out_of_range(url: str, now: datetime) -> int:
    """An ambient store whose probe read 26 °C every minute for 30 days; its excursion."""
    start = now - timedelta(days=DAYS)
    minutes = DAYS * 24 * 60
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO locations (id, site_id, kind, name, temp_min_c, temp_max_c)"
            " VALUES ('AMB', 'dc1', 'ambient_store', 'Ambient store', 15, 25)"
        )
        conn.execute("INSERT INTO sensors (id, model, serial) VALUES ('P-AMB', 'xy-md02', 'A1')")
        conn.execute(
            "INSERT INTO sensor_assignments (sensor_id, location_id, position, valid)"
            " VALUES ('P-AMB', 'AMB', 'middle', tstzrange(%s, NULL))",
            (start - timedelta(hours=2),),
        )
        batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
        assert batch is not None
        temps = 26.0 + 0.4 * np.sin(np.arange(minutes) / 90.0)
        with conn.cursor().copy(
            "COPY readings (sensor_id, seq, ts, received_at, gateway, status, temperature_c,"
            " batch_id) FROM STDIN"
        ) as copy:
            for i in range(minutes):
                ts = start + timedelta(minutes=i)
                copy.write_row(("P-AMB", i + 1, ts, ts, "gw-1", "ok", float(temps[i]), batch[0]))
        row = conn.execute(
            "INSERT INTO location_excursions (location_id, started_at, last_seen_at, sensors,"
            " limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, detected_at)"
            " VALUES ('AMB', %s, %s, '{P-AMB}', 15, 25, 25.6, 26.4, %s, 0, %s) RETURNING id",
            (start, now, DAYS * 86400.0, start),
        ).fetchone()
        assert row is not None
        conn.commit()
        conn.execute("ANALYZE")
        return int(row[0])


def _stock(url: str, lots: int, shipments: int, now: datetime) -> None:
    """``lots`` lots received into the cold rooms a day ago, and ``shipments`` shipments
    planned on the trucks, as a busy warehouse's goods page shows them."""
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('coldtrail.actor', 'bench', false)")
        conn.execute(
            "INSERT INTO temperature_profiles (id, name, temp_min_c, temp_max_c)"
            " VALUES ('2-8', 'Refrigerated 2-8 °C', 2, 8)"
        )
        conn.execute(
            "INSERT INTO products (gtin, name, profile_id)"
            " VALUES ('09501101530003', '胰岛素注射液 (Insulin injection)', '2-8')"
        )
        conn.execute(
            "INSERT INTO lots (gtin, lot_number) SELECT '09501101530003', 'L' || n"
            " FROM generate_series(1, %s) n",
            (lots,),
        )
        conn.execute(
            "INSERT INTO movements (lot_id, kind, quantity, at, to_location, party, recorded_by)"
            " SELECT l.id, 'receiving', 100, %s, 'CR' || lpad((l.id %% 200)::text, 3, '0'),"
            " '国药控股', 'bench' FROM lots l",
            (now - timedelta(days=1),),
        )
        conn.execute(
            "INSERT INTO shipments (id, vehicle_id, origin_site, destination)"
            " SELECT 'SH' || n, 'TRK' || lpad((n %% 25)::text, 2, '0'), 'dc1', '北京协和医院药房'"
            " FROM generate_series(1, %s) n",
            (shipments,),
        )
        conn.commit()
        conn.execute("ANALYZE")


def _timed(http: httpx2.Client, path: str, **kw: object) -> tuple[float, float, int]:
    runs: list[float] = []
    size = 0
    for n in range(RUNS + 1):
        start = time.perf_counter()
        resp = http.get(path, timeout=60, **kw)  # type: ignore[arg-type]
        resp.raise_for_status()
        size = len(resp.content)
        if n:  # the first is the warm-up
            runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000, max(runs) * 1000, size


def _sign_in(http: httpx2.Client) -> None:
    form = http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    done = http.post(
        "/login", data={"username": "admin", "password": ADMIN_PW, "csrf": token.group(1)}
    )
    assert done.status_code == 303, done.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--lots", type=int, default=2_000)
    parser.add_argument("--shipments", type=int, default=50)
    args = parser.parse_args()
    name = f"bench_console_{uuid.uuid4().hex[:6]}"
    url = make_database(name)
    now = datetime.now(UTC)
    try:
        _fill(url, args.sensors, now)
        excursion = _month_out_of_range(url, now)
        _stock(url, args.lots, args.shipments, now)
        with (
            running_api(url, settings={"COLDTRAIL_LIVE_MAX_AGE_S": "2"}) as api,
            httpx2.Client(base_url=api.url) as http,
        ):
            _sign_in(http)
            board = _timed(http, "/board")
            live = _timed(http, "/api/v1/live", headers=api.headers)
            page = _timed(http, f"/excursions/{excursion}")
            goods = _timed(http, "/goods")
            lots = _timed(http, "/api/v1/lots", params={"limit": 1000}, headers=api.headers)
            period = {"from": (now - timedelta(days=DAYS, hours=1)).isoformat(),
                      "to": now.isoformat(), "format": "json"}  # fmt: skip
            record = _timed(http, "/api/v1/locations/AMB/record", params=period,
                            headers=api.headers)  # fmt: skip
            with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
                body = LiveBuilder().build(conn, None, datetime.now(UTC))
            fresh: list[float] = []
            for _ in range(5):
                start = time.perf_counter()
                Board(body, str, "Asia/Shanghai")
                fresh.append(time.perf_counter() - start)
            shell = len(http.get("/login").content) + sum(
                len(http.get(f"/static/{f}").content)
                for f in ("console.css", "board.js", "dialog.js")
            )
    finally:
        drop_database(name)
    print(f"board of {args.sensors} sensors: median {board[0]:.0f} ms, slowest {board[1]:.0f} ms,"
          f" {board[2] / 1e6:.1f} MB; /api/v1/live median {live[0]:.0f} ms")  # fmt: skip
    print(f"excursion page, 30-day chart ({DAYS * 1440} readings): median {page[0]:.0f} ms,"
          f" slowest {page[1]:.0f} ms, {page[2] / 1e3:.0f} KB; record JSON median"
          f" {record[0]:.0f} ms")  # fmt: skip
    print(
        f"RESULT console_board_p99_ms={board[1]:.0f} goal=300"
        f" ratio_to_live_json={board[0] / live[0]:.2f}"
    )
    print(
        f"RESULT console_excursion_30d_p99_ms={page[1]:.0f} goal=300"
        f" ratio_to_record_json={page[0] / record[0]:.2f}"
    )
    print(
        f"RESULT console_board_rows_from_a_new_document_ms={statistics.median(fresh) * 1000:.0f}"
        " (once per live document, at most every 2 s)"
    )
    print(f"goods page, {args.lots} lots in store and {args.shipments} planned shipments:"
          f" median {goods[0]:.0f} ms, slowest {goods[1]:.0f} ms, {goods[2] / 1e6:.1f} MB;"
          f" /api/v1/lots?limit=1000 median {lots[0]:.0f} ms")  # fmt: skip
    print(
        f"RESULT console_goods_p99_ms={goods[1]:.0f} goal=300"
        f" ratio_to_lots_json={goods[0] / lots[0]:.2f}"
    )
    print(f"RESULT console_page_weight_kb={shell / 1e3:.0f} goal=300")


if __name__ == "__main__":
    main()
