"""``coldtrail sim ...``: the simulators as long-running processes, for demos and for trying an
edge config against something before the hardware arrives."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from coldtrail.clock import Clock, first_of
from coldtrail.errors import ConfigError
from coldtrail.sim.scenarios import Scenario, parse_scenario

if TYPE_CHECKING:
    from coldtrail.sim.modbus_server import SimulatedDevice

RunAsync = Callable[[Callable[[asyncio.Event], Coroutine[Any, Any, None]]], None]


def _modbus_device(spec: str, start: datetime) -> SimulatedDevice:
    """``UNIT[@MODEL]:SCENARIO``; the model defaults to xy-md02."""
    from coldtrail.sim.ee072 import SimulatedEE072
    from coldtrail.sim.renke import SimulatedRenke
    from coldtrail.sim.xymd02 import SimulatedXYMD02

    models: dict[str, Callable[[int, Scenario, datetime], SimulatedDevice]] = {
        "xy-md02": SimulatedXYMD02,
        "ee072": SimulatedEE072,
        "renke-rs-ws-n01": SimulatedRenke,
    }
    head, _, scenario = spec.partition(":")
    unit, _, model = head.partition("@")
    model = model or "xy-md02"
    if not unit.isdigit() or not scenario:
        raise ConfigError(f"--device wants UNIT[@MODEL]:SCENARIO, got {spec!r}")
    if model not in models:
        raise ConfigError(f"no simulator for model {model!r}; known: {', '.join(models)}")
    try:
        return models[model](int(unit), parse_scenario(scenario), start)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


async def _serve(
    devices: list[SimulatedDevice], clock: Clock, args: argparse.Namespace, stack: AsyncExitStack
) -> str:
    """Serve ``devices`` over Modbus TCP, or RTU on a pty pair with --rtu; says where."""
    from coldtrail.sim.modbus_server import ModbusRtuSimServer, ModbusSimServer

    if args.rtu:
        from coldtrail.sim.serial_line import PtyNullModem

        line = await stack.enter_async_context(PtyNullModem())
        await stack.enter_async_context(ModbusRtuSimServer(devices, clock, line))
        return f"Modbus RTU on {line.host_port} (serial_port for the edge config)"
    server = await stack.enter_async_context(
        ModbusSimServer(devices, clock, host=args.host, port=args.port)
    )
    return f"Modbus TCP on {args.host}:{server.port}"


def sim_modbus(args: argparse.Namespace, clock: Clock, run: RunAsync) -> None:
    devices = [_modbus_device(spec, clock.now()) for spec in args.device]

    async def main(stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            where = await _serve(devices, clock, args, stack)
            units = ", ".join(f"{d.unit} ({type(d).__name__})" for d in devices)
            print(f"{where}, units {units}", flush=True)
            await stop.wait()

    run(main)


def sim_ble(args: argparse.Namespace, clock: Clock, run: RunAsync) -> None:
    from coldtrail.sim.ble import SimulatedAirwaves, advert_to_json, parse_device

    try:
        loggers = [parse_device(spec, clock.now()) for spec in args.device]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for logger in loggers:
        logger.measure_every_s = args.measure_every
    airwaves = SimulatedAirwaves(loggers, clock, advert_every_s=args.interval)

    async def main(stop: asyncio.Event) -> None:
        out: TextIO = sys.stdout if args.out is None else args.out.open("a", encoding="utf-8")
        try:

            def emit(advert: Any) -> None:
                out.write(advert_to_json(advert, clock.now()) + "\n")
                out.flush()

            sent = 0
            while not stop.is_set() and (args.count is None or sent < args.count):
                airwaves.broadcast(emit)
                sent += 1
                await first_of(clock.sleep(args.interval), stop.wait())
        finally:
            if out is not sys.stdout:
                out.close()

    run(main)


def sim_vehicle(args: argparse.Namespace, clock: Clock, run: RunAsync) -> None:
    from coldtrail.sim.vehicle import Compartment, SimulatedVehicle, parse_event

    try:
        events = tuple(parse_event(e) for e in args.event)
        compartments = tuple(
            Compartment(name, float(setpoint))
            for name, _, setpoint in (
                c.partition("=") for c in args.compartment or ["chilled=5", "frozen=-20"]
            )
        )
        vehicle = SimulatedVehicle(args.vehicle_id, compartments, clock.now(), events=events)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    async def main(stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            where = await _serve(vehicle.devices(), clock, args, stack)
            probes = ", ".join(f"{p.name}=unit {p.unit}" for p in vehicle.probes)
            doors = ", ".join(f"{d.compartment}=unit {d.unit}" for d in vehicle.doors)
            print(
                f"vehicle {vehicle.vehicle_id}: {where}; probes {probes}; "
                f"telematics unit {vehicle.telematics.unit}; doors {doors}",
                flush=True,
            )
            last = clock.now()
            while not stop.is_set():
                await first_of(clock.sleep(args.gps_every), stop.wait())
                now = clock.now()
                for entry in vehicle.journal(last, now):
                    print(json.dumps(entry), flush=True)
                fix = vehicle.position(now)
                t = vehicle.elapsed(now)
                print(
                    json.dumps(
                        {
                            "ts": now.isoformat(),
                            "vehicle": vehicle.vehicle_id,
                            "lat": round(fix.lat, 6),
                            "lon": round(fix.lon, 6),
                            "speed_kmh": fix.speed_kmh,
                            "powered": vehicle.powered(t),
                            "network": vehicle.network_up(t),
                        }
                    ),
                    flush=True,
                )
                last = now

    run(main)


def add_parsers(sim_sub: Any, handler: Callable[[Callable[..., None]], Any]) -> None:
    """The ``sim`` subcommands; ``handler(fn)`` makes the argparse default for one."""

    def transport(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=5020)
        p.add_argument("--rtu", action="store_true", help="serve Modbus RTU on a pty pair")

    modbus = sim_sub.add_parser("modbus", help="loggers behind Modbus TCP (or RTU with --rtu)")
    transport(modbus)
    modbus.add_argument(
        "--device",
        action="append",
        required=True,
        help="UNIT[@MODEL]:SCENARIO, e.g. 1:steady, 2@ee072:compressor-failure:fail_at_s=30; "
        "models xy-md02 (default), ee072, renke-rs-ws-n01",
    )
    modbus.set_defaults(func=handler(sim_modbus))

    ble = sim_sub.add_parser("ble", help="BLE advert stream (JSON lines) for the replay scanner")
    ble.add_argument(
        "--device",
        action="append",
        required=True,
        help="MAC:FORMAT:SCENARIO, FORMAT one of bthome, ruuvi, atc1441, pvvx",
    )
    ble.add_argument("--interval", type=float, default=2.0, help="seconds between adverts")
    ble.add_argument("--measure-every", type=float, default=10.0, help="seconds per measurement")
    ble.add_argument("--count", type=int, default=None, help="stop after this many rounds")
    ble.add_argument("--out", type=Path, default=None, help="append to FILE/FIFO, not stdout")
    ble.set_defaults(func=handler(sim_ble))

    vehicle = sim_sub.add_parser(
        "vehicle", help="a refrigerated vehicle: probes over Modbus, GPS and events on stdout"
    )
    transport(vehicle)
    vehicle.add_argument("--vehicle-id", default="TRK-1")
    vehicle.add_argument(
        "--compartment",
        action="append",
        default=None,
        help="NAME=SETPOINT_C, two probes each (default: chilled=5, frozen=-20)",
    )
    vehicle.add_argument(
        "--event",
        action="append",
        default=[],
        help="KIND@AT_S+DURATION_S[:TARGET]: door-opening, compressor-failure, power-loss, "
        "sensor-unplugged (target a probe, e.g. chilled-2), network-outage",
    )
    vehicle.add_argument("--gps-every", type=float, default=10.0)
    vehicle.set_defaults(func=handler(sim_vehicle))
