"""Edge footprint: peak RSS of a `coldtrail edge` process polling 50 sensors, and its CPU time
per 1 000 readings.

Starts `coldtrail sim modbus` with 50 XY-MD02 units (or, with --kind ble, `coldtrail sim ble`
writing the adverts of 50 BLE loggers of four formats to the file the agent's replay scanner
follows) and `coldtrail edge` (SQLite queue, FULL sync) on the local broker, lets it run, and
reads the agent's /proc figures (Linux). Reference: a bare Python interpreter.

    .venv/bin/python -m bench.footprint [--kind modbus|ble] [--sensors 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from coldtrail.edge.config import DeviceConfig, EdgeConfig, dump_config
from coldtrail.net import free_port

MQTT = os.environ.get("COLDTRAIL_BENCH_MQTT", "mqtt://127.0.0.1:1883")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _recorded(state: Path) -> int:
    path = state / "queue.sqlite3"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT coalesce(sum(last), 0) FROM seq").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(row[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sensors", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--kind", choices=("modbus", "ble"), default="modbus")
    args = p.parse_args()
    coldtrail = shutil.which("coldtrail", path=str(Path(sys.executable).parent)) or "coldtrail"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    env |= {"COLDTRAIL_MQTT_URL": MQTT, "COLDTRAIL_MQTT_TOPIC_ROOT": f"bench{uuid.uuid4().hex[:6]}"}
    quiet = subprocess.DEVNULL
    pause = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "edge.toml"
        adverts = Path(tmp) / "adverts.jsonl"
        adverts.touch()
        if args.kind == "modbus":
            devices = [
                DeviceConfig(
                    sensor=f"S{u:03d}", model="xy-md02", port=port, unit=u,
                    poll_interval_s=args.poll,
                )
                for u in range(1, args.sensors + 1)
            ]  # fmt: skip
            specs = [f"{u}:steady" for u in range(1, args.sensors + 1)]
            sim_cmd = [coldtrail, "sim", "modbus", "--port", str(port)]
        else:
            kinds = [("bthome", "bthome"), ("ruuvi", "ruuvitag"), ("atc1441", "lywsd03mmc-atc"),
                     ("pvvx", "lywsd03mmc-atc")]  # fmt: skip
            macs = [f"A4:C1:38:00:{u // 256:02X}:{u % 256:02X}" for u in range(1, args.sensors + 1)]
            devices = [
                DeviceConfig(
                    sensor=f"S{u:03d}", source="ble", model=kinds[u % 4][1], mac=mac,
                    poll_interval_s=args.poll,
                )
                for u, mac in enumerate(macs, start=1)
            ]  # fmt: skip
            specs = [f"{mac}:{kinds[u % 4][0]}:steady" for u, mac in enumerate(macs, start=1)]
            sim_cmd = [coldtrail, "sim", "ble", "--out", str(adverts), "--interval", "1",
                       "--measure-every", "1"]  # fmt: skip
        edge_config = EdgeConfig(
            site="bench",
            gateway="gw-foot",
            state_dir=Path("state"),
            ble_scanner="replay" if args.kind == "ble" else "bleak",
            ble_replay_file=adverts if args.kind == "ble" else None,
            devices=tuple(devices),
        )
        config.write_text(dump_config(edge_config))
        with subprocess.Popen(
            [*sim_cmd, *(a for spec in specs for a in ("--device", spec))],
            env=env,
            stdout=quiet,
            stderr=quiet,
        ) as sim:
            pause.wait(2.0)  # the simulator starts listening
            with subprocess.Popen(
                [coldtrail, "edge", "--config", str(config)], env=env, stdout=quiet, stderr=quiet
            ) as edge:
                pause.wait(3.0)  # start-up (imports, connects) is not steady state
                cpu0, n0 = _cpu_s(edge.pid), _recorded(Path(tmp) / "state")
                pause.wait(args.seconds)
                cpu1, n1 = _cpu_s(edge.pid), _recorded(Path(tmp) / "state")
                rss = _peak_rss_mb(edge.pid)
                edge.send_signal(signal.SIGTERM)
                edge.wait(30)
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"]) as bare:
        time.sleep(0.5)
        bare_rss = _peak_rss_mb(bare.pid)
    readings = n1 - n0
    cpu_per_1000 = (cpu1 - cpu0) / max(readings, 1) * 1000
    print(
        f"{args.sensors} {args.kind} sensors polled every {args.poll:g} s for {args.seconds:g} s: "
        f"{readings} readings recorded and published"
    )
    print(
        f"agent peak RSS {rss:.1f} MB (bare Python {bare_rss:.1f} MB); "
        f"CPU {cpu1 - cpu0:.2f} s, {cpu_per_1000:.3f} s per 1000 readings"
    )
    print(
        f"RESULT name=footprint kind={args.kind} sensors={args.sensors} peak_rss_mb={rss:.1f} "
        f"cpu_s_per_1000_readings={cpu_per_1000:.3f} reference=bare_python "
        f"reference_rss_mb={bare_rss:.1f} ratio={rss / bare_rss:.2f}"
    )


if __name__ == "__main__":
    main()
