"""The edge never loses a reading: broker outages, on real Mosquitto and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from coldtrail.clock import ManualClock
from coldtrail.edge.agent import EdgeAgent
from coldtrail.edge.config import DeviceConfig, EdgeConfig, dump_config
from coldtrail.net import free_port
from coldtrail.sim.modbus_server import ModbusSimServer
from coldtrail.sim.scenarios import Steady
from coldtrail.sim.xymd02 import SimulatedXYMD02
from tests.conftest import (
    PrivateBroker,
    RunningIngest,
    async_wait_for,
    count_readings,
    ingest_worker,
    make_site,
    publishing,
    wait_for,
)
from tests.test_cli import COLDTRAIL

Conn = psycopg.Connection[tuple[Any, ...]]

# These tests restart the broker. Mosquitto 2.0.11 restores a persistent session's plain
# subscriptions after a restart but not its shared ones ($share/...), so ingest subscribes as
# it does in production: until it has subscribed again, the broker's PUBACK says nobody took
# the edges' readings (16), and the edges keep them.
SHARED = "ingest"


async def test_broker_down_for_a_stretch_then_every_reading_arrives_in_order(
    conn: Conn,
    db_url: str,
    private_broker: PrivateBroker,
    topic_root: str,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    make_site(conn, {"S-A": "CR", "S-B": "CR"})
    options = private_broker.options
    devices = [SimulatedXYMD02(u, Steady(base_c=4.0 + u), clock.now()) for u in (1, 2)]
    async with ModbusSimServer(devices, clock) as server:
        config = EdgeConfig(
            site="s1",
            gateway="gw-1",
            state_dir=tmp_path / "edge",
            publish_interval_s=0.05,
            devices=tuple(
                DeviceConfig(sensor=s, model="xy-md02", port=server.port, unit=u)
                for s, u in (("S-A", 1), ("S-B", 2))
            ),
        )
        agent = EdgeAgent(config, options, topic_root, clock)

        async def poll(times: int) -> None:
            for _ in range(times):
                for c in agent.coordinators:
                    await c.poll_once()
                clock.advance(60)

        with RunningIngest(ingest_worker(db_url, options, topic_root, share_group=SHARED)):
            async with publishing(agent, f"edge-{topic_root}"):
                await poll(3)
                agent.publisher.wake()
                await async_wait_for(lambda: count_readings(conn) == 6, what="6 readings")

                private_broker.stop()
                await async_wait_for(lambda: not agent.publisher.connected, what="disconnect")
                await poll(30)  # half an hour of readings while the broker is away
                assert len(agent.queue) == 60

                private_broker.start()
                await async_wait_for(
                    lambda: count_readings(conn) == 66, limit_s=60, what="the backlog"
                )
                await async_wait_for(lambda: len(agent.queue) == 0, what="PUBACK of the backlog")

    for sensor in ("S-A", "S-B"):
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM readings WHERE sensor_id = %s ORDER BY ts", (sensor,)
            )
        ]
        assert seqs == list(range(1, 34)), sensor  # every one, none twice, in time order


def _max_seqs(conn: Conn) -> dict[str, int]:
    return dict(conn.execute("SELECT sensor_id, max(seq) FROM readings GROUP BY sensor_id"))


def _edge_last_seqs(state_dir: Path) -> dict[str, int]:
    """What the edge process has recorded so far, read from its own state database."""
    import sqlite3

    for name in ("queue.sqlite3", "sequence.sqlite3"):
        path = state_dir / name
        if path.exists():
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                try:
                    return dict(db.execute("SELECT sensor, last FROM seq"))
                except sqlite3.OperationalError:  # table not made yet
                    return {}
    return {}


def test_edge_killed_9_with_a_backlog_and_restarted_leaves_no_gap(
    conn: Conn,
    db_url: str,
    private_broker: PrivateBroker,
    topic_root: str,
    tmp_path: Path,
) -> None:
    make_site(conn, {"S-A": "CR", "S-B": "CR"})
    options = private_broker.options
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        dump_config(
            EdgeConfig(
                site="s1",
                gateway="gw-k",
                state_dir=Path("state"),
                publish_interval_s=0.1,
                devices=tuple(
                    DeviceConfig(sensor=s, model="xy-md02", port=port, unit=u, poll_interval_s=0.1)
                    for s, u in (("S-A", 1), ("S-B", 2))
                ),
            )
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    env |= {"COLDTRAIL_MQTT_URL": private_broker.url, "COLDTRAIL_MQTT_TOPIC_ROOT": topic_root}
    sim_cmd = [
        COLDTRAIL,
        "sim",
        "modbus",
        "--port",
        str(port),
        "--device",
        "1:steady",
        "--device",
        "2:door-opening",
    ]
    edge_cmd = [COLDTRAIL, "edge", "--config", str(config)]
    out = subprocess.DEVNULL
    edge: subprocess.Popen[bytes] | None = None
    with (
        subprocess.Popen(sim_cmd, env=env, stdout=out, stderr=out) as sim,
        RunningIngest(ingest_worker(db_url, options, topic_root, share_group=SHARED)),
    ):
        try:
            edge = subprocess.Popen(edge_cmd, env=env, stdout=out, stderr=out)
            wait_for(
                lambda: min(_max_seqs(conn).values(), default=0) >= 5,
                timeout=30,
                what="readings from the first edge process",
            )

            private_broker.stop()  # the truck drives out of coverage ...
            stored = _max_seqs(conn)
            wait_for(
                lambda: all(
                    _edge_last_seqs(tmp_path / "state").get(s, 0) >= n + 10
                    for s, n in stored.items()
                ),
                timeout=30,
                what="a backlog of 10 readings per sensor at the edge",
            )
            os.kill(edge.pid, signal.SIGKILL)  # ... and the gateway loses power
            edge.wait(10)
            recorded = _edge_last_seqs(tmp_path / "state")

            private_broker.start()
            edge = subprocess.Popen(edge_cmd, env=env, stdout=out, stderr=out)
            wait_for(
                lambda: all(_max_seqs(conn).get(s, 0) >= n + 5 for s, n in recorded.items()),
                timeout=60,
                what="the backlog and new readings after the restart",
            )
            edge.send_signal(signal.SIGTERM)
            assert edge.wait(15) == 0
        finally:
            if edge is not None and edge.poll() is None:
                edge.kill()
            sim.terminate()
    for sensor in ("S-A", "S-B"):
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM readings WHERE sensor_id = %s ORDER BY seq", (sensor,)
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1)), sensor  # no gap, nothing twice
        assert len(seqs) >= recorded[sensor] + 5
