"""Mean kinetic temperature against values computed by hand (50-digit decimal arithmetic of
USP <1079.2>'s formula, ΔH/R = 10 000 K), and the ``coldtrail mkt`` command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from coldtrail.errors import PayloadError
from coldtrail.rules.mkt import mkt, mkt_of_csv
from tests.test_cli import COLDTRAIL, _run

MIN = 60.0


def _even(*temps: float, step_s: float = 600.0) -> float:
    times = np.arange(len(temps)) * step_s
    return mkt(times, np.array(temps)).mkt_c


def test_mkt_of_even_readings_matches_the_hand_computed_values() -> None:
    assert _even(5.0, 5.0, 5.0) == pytest.approx(5.0, abs=1e-9)
    assert _even(20.0, 30.0) == pytest.approx(26.259886916003410, abs=1e-9)
    assert _even(2.0, 8.0, 25.0) == pytest.approx(17.016338583705757, abs=1e-9)
    # One warm hour among three cold ones pulls the MKT well above the arithmetic mean (10).
    assert _even(5.0, 5.0, 5.0, 25.0) == pytest.approx(15.132218289420681, abs=1e-9)


def test_each_value_weighs_the_time_it_stands_for() -> None:
    # 4 °C until 60 min, then 10 °C from 60 min (for 30 min) and 90 min (the median 45 min).
    result = mkt(np.array([0.0, 60 * MIN, 90 * MIN]), np.array([4.0, 10.0, 10.0]))
    assert result.mkt_c == pytest.approx(_even_weighted([(4.0, 60), (10.0, 75)]), abs=1e-9)
    assert result.covered_s == 135 * MIN


def test_a_gap_is_not_filled_by_the_value_before_it() -> None:
    times = np.array([0, 10, 20, 320, 330]) * MIN  # five hours without data after 20 min
    temps = np.array([5.0, 5.0, 5.0, 25.0, 25.0])
    result = mkt(times, temps)
    # The 5 °C at 20 min stands for 20 min (twice the median step), not 300.
    assert result.covered_s == (10 + 10 + 20 + 10 + 10) * MIN
    assert result.mkt_c == pytest.approx(_even_weighted([(5.0, 40), (25.0, 20)]), abs=1e-9)
    wide = mkt(times, temps, max_gap_s=6 * 3600)
    assert wide.covered_s == 340 * MIN


def _even_weighted(parts: list[tuple[float, float]]) -> float:
    # The same formula again in plain floats, for the weighted cases.
    import math

    total = sum(w for _, w in parts)
    mean = sum(w * math.exp(-10000 / (t + 273.15)) for t, w in parts) / total
    return 10000 / -math.log(mean) - 273.15


def test_csv_errors_name_the_line() -> None:
    with pytest.raises(PayloadError, match="line 3"):
        mkt_of_csv("ts,temperature_c\n2026-11-22T10:00:00Z,5\n2026-11-22T10:10:00Z,warm\n")
    with pytest.raises(PayloadError, match="no UTC offset"):
        mkt_of_csv("2026-11-22T10:00:00,5\n")
    with pytest.raises(PayloadError, match="same time"):
        mkt_of_csv("2026-11-22T10:00:00Z,5\n2026-11-22T10:00:00Z,6\n")
    with pytest.raises(PayloadError, match="no readings"):
        mkt_of_csv("ts,temperature_c\n")


def test_mkt_command_reads_a_file_or_stdin(tmp_path: Path) -> None:
    rows = "ts,temperature_c\n" + "".join(
        f"2026-11-22T{h:02d}:00:00+01:00,{t}\n" for h, t in enumerate((20, 30, 20, 30))
    )
    path = tmp_path / "record.csv"
    path.write_text(rows)
    assert _run("mkt", str(path)).stdout == "26.26\n"
    piped = subprocess.run(
        [COLDTRAIL, "mkt"], input=rows, capture_output=True, text=True, timeout=60, check=True
    )
    assert piped.stdout == "26.26\n"
    bad = _run("mkt", str(tmp_path / "missing.csv"))
    assert bad.returncode == 2
    assert "cannot read" in bad.stderr
