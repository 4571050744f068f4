"""Validation: how long the OQ suite and the pack take, against migrating one database.

Runs every OQ case as ``coldtrail validate oq`` does (each on a scratch copy of a migrated
template, through the broker), renders the pack's PDF, and times a plain migration of a new
database as the reference (what each case's scratch copy saves).

    python -m bench.validation
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench._db import PG, backend, drop_database, make_database
from coldtrail.compliance import profiles
from coldtrail.mqtt import MqttOptions
from coldtrail.rules.notifiers import NotifierSettings, build_notifiers
from coldtrail.settings import MqttEndpoint, Settings
from coldtrail.validation import iq, oq, pack
from coldtrail.validation.harness import Target

MQTT = os.environ.get("COLDTRAIL_BENCH_MQTT", "mqtt://127.0.0.1:1883")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    logging.getLogger("coldtrail").setLevel(logging.ERROR)
    where = backend()
    name = f"bench_validation_{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    url = make_database(name)
    migrate_s = time.perf_counter() - t0
    try:
        options = MqttOptions(MqttEndpoint.parse(MQTT))
        with tempfile.TemporaryDirectory() as work:
            target = Target(
                database_url=url, mqtt=options, topic_root="ctbench", site="oq",
                profile=profiles()["cn-drug-gsp"],
                notifiers=build_notifiers(NotifierSettings()), workdir=Path(work),
                scratch=True, admin_url=PG,
            )  # fmt: skip
            t0 = time.perf_counter()
            results = oq.run_cases(target)
            total = time.perf_counter() - t0
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            installed = iq.record(conn, Settings.model_construct(), options, profiles(), None,
                                  datetime.now(UTC).date())  # fmt: skip
        now = datetime.now(UTC)
        doc = pack.document(iq=installed, oq=results, target=oq.target_summary(target),
                            started=now, finished=now, run_by="bench", changes_since=None,
                            changed=[])  # fmt: skip
        t0 = time.perf_counter()
        pdf = pack.render(doc, "0" * 64, [], None)
        render_ms = (time.perf_counter() - t0) * 1000
    finally:
        drop_database(name)
    for r in results:
        print(f"RESULT validation_case_s case={r.id} seconds={r.seconds:.2f} passed={r.passed} "
              f"backend={where}")  # fmt: skip
    passed = sum(r.passed for r in results)
    print(f"RESULT validation_oq_total_s={total:.1f} cases={len(results)} passed={passed} "
          f"reference_migrate_s={migrate_s:.2f} ratio={total / migrate_s:.1f} "
          f"backend={where}")  # fmt: skip
    print(f"RESULT validation_pack_pdf_ms={render_ms:.0f} bytes={len(pdf)} backend={where}")


if __name__ == "__main__":
    main()
