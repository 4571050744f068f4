"""Compliance regimes as data: one TOML file per profile (``profiles/``), each rule with its
value, unit, wording and source (``unsourced`` where ../shared/COMPLIANCE.md gives none). A
site can add its own profiles in a directory of its own; a profile there with a built-in's id
replaces it.

A site names its profile (``sites.compliance_profile``, migration 0022); a site naming none
is held to ``DEFAULT``, the regime of the distributors ColdTrail was made for.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coldtrail.errors import RuleViolation

BUILT_IN = Path(__file__).resolve().parent / "profiles"
DEFAULT = "cn-drug-gsp"
UNSOURCED = "unsourced"


@dataclass(frozen=True)
class Rule:
    id: str
    value: float
    unit: str
    text: str
    source: str
    extra: dict[str, Any]
    """Parameters some rules take (probes per area: ``step_m2``, ``cold_step_m2``)."""

    @property
    def sourced(self) -> bool:
        return self.source != UNSOURCED


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    rules: dict[str, Rule]
    path: Path

    def rule(self, rule_id: str) -> Rule | None:
        return self.rules.get(rule_id)


def load(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuleViolation(f"compliance profile {path.name}: {exc}") from exc
    rules = {}
    for rule_id, raw in (data.get("rules") or {}).items():
        if not isinstance(raw, dict):
            raise RuleViolation(f"compliance profile {path.name}: rule {rule_id} is not a table")
        try:
            value = float(raw["value"])
            rules[rule_id] = Rule(
                rule_id, value, str(raw["unit"]), str(raw["text"]), str(raw["source"]),
                {k: v for k, v in raw.items() if k not in ("value", "unit", "text", "source")},
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleViolation(
                f"compliance profile {path.name}: rule {rule_id} needs value, unit, text and "
                f"source ({exc})"
            ) from exc
        if value != value or value < 0:
            raise RuleViolation(f"compliance profile {path.name}: rule {rule_id}: bad value")
    profile_id = str(data.get("id") or path.stem)
    return Profile(profile_id, str(data.get("name") or profile_id), rules, path)


def profiles(extra: Path | None = None) -> dict[str, Profile]:
    """Every profile by id: the built-in ones, then a site's own (``extra``)."""
    found: dict[str, Profile] = {}
    for folder in (BUILT_IN, extra):
        if folder is None:
            continue
        for path in sorted(folder.glob("*.toml")):
            profile = load(path)
            found[profile.id] = profile
    return found
