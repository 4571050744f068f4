"""A serial line without hardware: two pseudo-terminals joined like a null-modem cable.

The simulated devices open one end (``device_port``), the edge opens the other
(``host_port``); both are ordinary tty paths, so pyserial and pymodbus drive them exactly as
they would a USB-RS485 adapter. The bytes in between are copied by this process's event loop,
as socat's ``pty,raw`` pair would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty


class PtyNullModem:
    """``present_units``, when set, is who is on the bus: a Modbus RTU request (its first byte
    is the unit address) for anyone else is not delivered, so the master times out as it does
    on a real bus when a device is missing or its RS-485 pair is cut."""

    def __init__(self) -> None:
        self.present_units: set[int] | None = None
        self._fds: list[int] = []
        self._masters: tuple[int, int] | None = None
        self.device_port = ""
        self.host_port = ""

    def _pair(self) -> tuple[int, str]:
        master, slave = os.openpty()
        for fd in (master, slave):
            tty.setraw(fd)
        self._fds += [master, slave]
        # The slave stays open here too: the line does not hang up when one side reopens it.
        return master, os.ttyname(slave)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        a, self.device_port = self._pair()
        b, self.host_port = self._pair()
        self._masters = (a, b)
        loop.add_reader(a, self._copy, a, b, False)
        loop.add_reader(b, self._copy, b, a, True)

    def _copy(self, src: int, dst: int, from_host: bool) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:  # the other end closed: nothing to carry
            return
        # The master writes each request whole, so one read holds one frame.
        if from_host and self.present_units is not None and data[0] not in self.present_units:
            return
        with contextlib.suppress(BlockingIOError):
            os.write(dst, data)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._masters is not None:
            for fd in self._masters:
                loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    async def __aenter__(self) -> PtyNullModem:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
