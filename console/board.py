"""The live board's probe rows, written out in Python: 10 000 of them through a Jinja2 macro
took 1.2 s, as plain strings about a tenth of that (bench.console).

A board is drawn from the live document the API serves (built at most every 2 s); the rows
drawn from one document are kept with it, per language, and drawn anew only from the next.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from html import escape
from typing import Any

from coldtrail.rules.texts import zone


class Board:
    """A live document read once, and its probes' rows by place, for one language."""

    def __init__(self, body: bytes, label: Callable[[str], str], timezone: str) -> None:
        self.body = body
        self.doc: dict[str, Any] = json.loads(body)
        self.rows: dict[str, str] = {}
        tz = zone(timezone)
        now = datetime.fromisoformat(self.doc["generated_at"])
        # One offset for the whole board: a reading of the last hours is in it.
        offset = now.astimezone(tz).utcoffset() or timedelta(0)
        labels: dict[str, str] = {}
        parts: dict[str, list[str]] = {}
        for s in self.doc["sensors"]:
            place = s.get("location") or {}
            if s["kind"] != "probe" or not place.get("id"):
                continue
            state = s["state"]
            if state not in labels:
                labels[state] = escape(label(state))
            r = s.get("latest") or {}
            t = r.get("temperature_c")
            rh = r.get("humidity_pct")
            ts = r.get("ts")
            shown = "—"
            if ts:
                local = datetime.fromisoformat(ts) + offset
                shown = f"{local:%m-%d %H:%M:%S}"
            position = place.get("position") or ""
            sensor = escape(s["sensor"])
            parts.setdefault(place["id"], []).append(
                f'<tr data-sensor="{sensor}" class="state-{state}"><th scope="row">{sensor}'
                + (f" <small>{escape(position)}</small>" if position else "")
                + "</th>"
                + f'<td class="t">{"—" if t is None else f"{t:.1f} °C"}</td>'
                + f'<td class="rh">{"—" if rh is None else f"{rh:.0f} %"}</td>'
                + f'<td class="ts" data-ts="{escape(ts or "")}">{shown}</td>'
                + f'<td class="st">{labels[state]}</td></tr>'
            )
        self.rows = {place: "".join(rows) for place, rows in parts.items()}


class Boards:
    """The board of each (site, language) kept with the document it was drawn from."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str | None, str], Board] = {}
        self._lock = threading.Lock()

    def get(
        self, site: str | None, lang: str, body: bytes, label: Callable[[str], str], tz: str
    ) -> Board:
        key = (site, lang)
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and kept.body is body:
            return kept
        board = Board(body, label, tz)
        with self._lock:
            self._kept[key] = board
        return board
