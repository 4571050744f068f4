"""The contract every source implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from coldtrail.edge.config import DeviceConfig
from coldtrail.edge.profiles import DeviceProfile


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


SourceFactory = Callable[[DeviceConfig, DeviceProfile], Source]
