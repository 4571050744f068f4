"""Mean kinetic temperature (USP <1079.2>), each value weighted by the time it stands for.

T_mk = (ΔH/R) / -ln( Σ tᵢ·exp(-ΔH/(R·Tᵢ)) / Σ tᵢ ), temperatures in kelvin. A value stands
for the time until the next one, but never for more than ``max_gap_s``: a gap in the record is
not filled by the value before it. The last value stands for the typical (median) interval.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from coldtrail.errors import PayloadError

GAS_CONSTANT = 8.3144  # J/(mol·K), as USP <1079.2> gives it
DEFAULT_DELTA_H_KJ = 83.144  # kJ/mol: ΔH/R = 10 000 K
KELVIN = 273.15


@dataclass(frozen=True)
class MktResult:
    mkt_c: float
    readings: int
    covered_s: float
    """The time the values stand for (gaps beyond max_gap_s left out)."""


def weights(epoch_s: np.ndarray, max_gap_s: float | None = None) -> np.ndarray:
    """The time each value stands for; ``epoch_s`` ascending."""
    if epoch_s.size == 1:
        return np.ones(1)
    steps = np.diff(epoch_s)
    typical = float(np.median(steps))
    cap = max_gap_s if max_gap_s is not None else 2.0 * typical
    held = np.minimum(steps, cap)
    return np.append(held, min(typical, cap))


def mkt(
    epoch_s: np.ndarray,
    temperature_c: np.ndarray,
    *,
    delta_h_kj: float = DEFAULT_DELTA_H_KJ,
    max_gap_s: float | None = None,
) -> MktResult:
    if epoch_s.size == 0:
        raise PayloadError("no readings: a mean kinetic temperature needs at least one")
    order = np.argsort(epoch_s, kind="stable")
    t = epoch_s[order].astype(float)
    temp_k = temperature_c[order].astype(float) + KELVIN
    if np.any(np.diff(t) == 0):
        raise PayloadError("two readings at the same time: the record is ambiguous")
    w = weights(t, max_gap_s)
    return MktResult(
        weighted_mkt(temp_k - KELVIN, w, delta_h_kj=delta_h_kj), int(t.size), float(w.sum())
    )


def weighted_mkt(
    temperature_c: np.ndarray, w: np.ndarray, *, delta_h_kj: float = DEFAULT_DELTA_H_KJ
) -> float:
    """The formula itself, each value weighted by ``w`` (seconds; their sum must be > 0)."""
    ratio = delta_h_kj * 1000.0 / GAS_CONSTANT
    # Scaled by the largest exponent so colder records don't underflow to zero.
    exponent = -ratio / (temperature_c.astype(float) + KELVIN)
    top = float(exponent.max())
    mean = float(np.sum(w * np.exp(exponent - top)) / np.sum(w))
    return ratio / -(math.log(mean) + top) - KELVIN


def read_csv(lines: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """``ts,temperature_c`` rows (RFC 3339 times with offset; a header row is allowed)."""
    times: list[float] = []
    temps: list[float] = []
    for n, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise PayloadError(f"line {n}: expected ts,temperature_c, got {','.join(row)!r}")
        ts_text, temp_text = row[0].strip(), row[1].strip()
        if n == 1 and not ts_text[:1].isdigit():
            continue  # header
        try:
            ts = datetime.fromisoformat(ts_text.replace("Z", "+00:00"))
            temp = float(temp_text)
        except ValueError as exc:
            raise PayloadError(f"line {n}: {exc}") from exc
        if ts.tzinfo is None:
            raise PayloadError(f"line {n}: {ts_text!r} has no UTC offset")
        if not math.isfinite(temp) or not -100.0 <= temp <= 200.0:
            raise PayloadError(f"line {n}: {temp_text!r} is not a plausible temperature")
        times.append(ts.timestamp())
        temps.append(temp)
    return np.array(times), np.array(temps)


def mkt_of_csv(text: str, **kwargs: float | None) -> MktResult:
    times, temps = read_csv(io.StringIO(text))
    return mkt(times, temps, **kwargs)  # type: ignore[arg-type]
