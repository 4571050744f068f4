"""The contract every source implements, and what the sources of one agent share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from coldtrail.clock import Clock
from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile

if TYPE_CHECKING:
    from coldtrail.edge.ble.scanner import AdvertScanner


@dataclass(frozen=True)
class Measurement:
    """What one read of a device gave. A quantity the device marked not-available is None."""

    values: dict[str, float | None] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.values.values())


class Source(Protocol):
    async def read(self) -> Measurement:
        """One measurement; raises :class:`coldtrail.errors.DeviceUnavailable` if none came."""
        ...

    async def close(self) -> None: ...


class SharedResource(Protocol):
    """A transport several sources use: a serial bus, a TCP gateway, the Bluetooth radio."""

    async def run(self, stop: asyncio.Event) -> None:
        """Background work (a BLE scan); returns at once if there is none."""
        ...

    async def close(self) -> None: ...


R = TypeVar("R", bound=SharedResource)


class SourceContext:
    """Per agent: the shared transports, created by the first source that needs one, so that
    devices on one RS-485 bus or behind one TCP gateway take turns on one connection."""

    def __init__(
        self,
        clock: Clock,
        ble_scanner: Callable[[], AdvertScanner] | None = None,
    ) -> None:
        self.clock = clock
        self.ble_scanner = ble_scanner
        """Makes the agent's advert scanner when a BLE logger first needs it."""
        self._shared: dict[Hashable, Any] = {}

    def shared(self, key: Hashable, create: Callable[[], R]) -> R:
        resource = self._shared.get(key)
        if resource is None:
            resource = self._shared[key] = create()
        return resource

    def resource(self, key: Hashable) -> Any:
        """A shared transport by its key (``"ble"``, ``("rtu", port)``); KeyError if none."""
        return self._shared[key]

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            for resource in list(self._shared.values()):
                tg.create_task(resource.run(stop))

    async def close(self) -> None:
        for resource in self._shared.values():
            await resource.close()
        self._shared.clear()

    async def __aenter__(self) -> SourceContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


SourceFactory = Callable[[DeviceConfig, DeviceProfile, SourceContext], Source]
