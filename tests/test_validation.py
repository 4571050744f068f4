"""The OQ cases, run as the project's integration tests: the same definitions
``coldtrail validate oq`` runs at a site, on real PostgreSQL and Mosquitto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coldtrail.compliance import profiles
from coldtrail.rules.notifiers import NotifierSettings, build_notifiers
from coldtrail.validation import oq
from coldtrail.validation.harness import Target
from tests.conftest import PG_URL

Conn = Any


def scratch_target(
    tmp_path: Path, mqtt_options: Any, topic_root: str, profile: str = "cn-drug-gsp"
) -> Target:
    return Target(
        database_url=PG_URL,
        mqtt=mqtt_options,
        topic_root=topic_root,
        site="oq",
        profile=profiles()[profile],
        notifiers=build_notifiers(NotifierSettings()),
        workdir=tmp_path,
        scratch=True,
        admin_url=PG_URL,
    )


@pytest.mark.parametrize("case_id", list(oq.CASES))
def test_each_oq_case_passes_on_a_fresh_install(
    case_id: str, template_db: str, tmp_path: Path, mqtt_options: Any, topic_root: str
) -> None:
    [result] = oq.run_cases(
        scratch_target(tmp_path, mqtt_options, topic_root), [case_id], template_db
    )
    assert result.passed, (result.error, [c for c in result.checks if not c["passed"]])
    assert result.checks
    assert result.evidence
