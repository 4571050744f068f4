"""The rules judge the windows of many sensors in one numpy pass: nothing may carry over from
one sensor's window to the next. Each case judges random windows together and one by one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from coldtrail.rules.conditions import Condition, Limits, find_conditions
from coldtrail.rules.fetch import PG_EPOCH, _place_codes
from coldtrail.rules.judge import Run, find_runs
from coldtrail.rules.ranges import Columns, Places, ProductSpan, Readings, with_ranges

PLACES = Places.from_rows(
    [
        ("CR", 2.0, 8.0, 300, "cold_room", 30.0, 60.0),
        ("TRUCK", 2.0, 8.0, 0, "vehicle", None, None),
        ("DOCK", None, None, 0, "ambient_store", None, None),  # judged only by its products
    ]
)
SPANS = {"DOCK": [ProductSpan(1_000.0, 30_000.0, 2.0, 25.0, 120.0, np.nan, np.nan)]}


def _window(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    steps = rng.choice([30.0, 60.0, 60.0, 60.0, 400.0, 2_400.0], size=n)
    temp = 5.0 + np.cumsum(rng.normal(0.0, 1.2, n))
    temp[rng.random(n) < 0.05] = np.nan
    humidity = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(20.0, 70.0, n))
    battery = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(5.0, 40.0, n))
    # Stays of a few dozen readings in a place, now and then in none.
    loc = np.repeat(rng.integers(0, 4, size=n // 20 + 1), 20)[:n]
    return {
        "epoch_s": rng.uniform(0.0, 40_000.0) + np.cumsum(steps),  # windows overlap in time
        "seq": np.arange(1, n + 1),
        "status_ok": rng.random(n) > 0.08,
        "temp": temp,
        "humidity": humidity,
        "battery": battery,
        "loc": loc,
    }


def _columns(sensors: list[str], windows: list[dict[str, np.ndarray]]) -> Columns:
    sizes = [w["epoch_s"].size for w in windows]
    return Columns(
        sensors=sensors,
        group=np.repeat(np.arange(len(windows)), sizes),
        places=PLACES,
        **{k: np.concatenate([w[k] for w in windows]) for k in windows[0]},
    )


def _judged(data: Readings) -> tuple[list[Run], list[Condition]]:
    runs = [replace(r, group=0) for r in find_runs(data.temperature)]
    return runs, find_conditions(data, Limits())


@pytest.mark.parametrize("seed", range(12))
def test_sensors_judged_together_as_each_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sensors = [f"S{k}" for k in range(10)]
    windows = [_window(rng, int(rng.integers(1, 400))) for _ in sensors]

    together_runs, together_conditions = _judged(with_ranges(_columns(sensors, windows), SPANS))
    alone_runs: list[Run] = []
    alone_conditions: list[Condition] = []
    for sensor, window in zip(sensors, windows, strict=True):
        runs, conditions = _judged(with_ranges(_columns([sensor], [window]), SPANS))
        alone_runs += runs
        alone_conditions += conditions

    assert together_runs, "the random windows must hold excursions for the test to mean much"
    assert {c.kind for c in together_conditions} >= {"record_interval", "rapid_change"}
    assert together_runs == alone_runs
    assert sorted(together_conditions, key=repr) == sorted(alone_conditions, key=repr)


def test_a_run_open_at_a_sensors_last_reading_stays_open() -> None:
    """The next sensor's first reading, in range, must not close the first one's run."""
    hot = {
        "epoch_s": np.array([0.0, 60.0, 120.0]),
        "seq": np.array([1, 2, 3]),
        "status_ok": np.ones(3, bool),
        "temp": np.array([5.0, 9.0, 9.5]),
        "humidity": np.full(3, np.nan),
        "battery": np.full(3, np.nan),
        "loc": np.array([2, 2, 2]),  # the truck: no alarm delay
    }
    cool = {**hot, "epoch_s": np.array([130.0, 190.0, 250.0]), "temp": np.full(3, 5.0)}
    data = with_ranges(_columns(["HOT", "COOL"], [hot, cool]), {})

    (run,) = find_runs(data.temperature, confirmed_only=True)

    assert (run.group, run.ended_at, run.readings) == (0, None, 2)
    assert run.max_c == 9.5


def test_places_are_found_exactly_even_across_decades_of_windows() -> None:
    """The place of each reading comes from one integer key over (sensor, time); windows too
    long for it (a logger whose clock said 1971, among thousands of sensors) are looked up
    sensor by sensor, with the same answer, to the microsecond."""
    moved = datetime(2026, 1, 2, tzinfo=UTC)
    tick = timedelta(microseconds=1)
    times = [datetime(2026, 1, 1, tzinfo=UTC), moved - tick, moved,
             datetime(1970, 12, 31, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]  # fmt: skip
    ts = np.array([(t - PG_EPOCH) // tick for t in times])
    expected = [PLACES.code["CR"], PLACES.code["CR"], PLACES.code["TRUCK"], 0, PLACES.code["DOCK"]]
    since_1971 = datetime(1971, 1, 1, tzinfo=UTC)

    for second in (1, 5_000):  # the second sensor's group number: 5 000 overflows one key
        assigned = [(1, "CR", None, moved), (1, "TRUCK", moved, None),
                    (second + 1, "DOCK", since_1971, None)]  # fmt: skip
        group = np.array([0, 0, 0, second, second])
        assert _place_codes(group, ts, assigned, PLACES).tolist() == expected
