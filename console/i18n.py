"""The console's languages: English (the message ids themselves) and Simplified Chinese, from
a gettext catalogue (``locale/zh_CN/LC_MESSAGES/console.po``) read with Babel when the
console starts. GSP's own terms are used as a QA department in China writes them: 温度偏差
(excursion), 隔离 (quarantine), 放行 (release), 拒收 (reject), 电子签名 (e-signature), 纠正和
预防措施 (CAPA).

One Jinja2 environment per language, each with its translations installed: a page is
rendered whole in one language, and no request changes what another sees.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Callable
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
CATALOGUE = HERE / "locale" / "zh_CN" / "LC_MESSAGES" / "console.po"
LANGUAGES = {"en": "English", "zh": "简体中文"}

# Codes the pages show through ``pgettext(context, code)``: no extractor can find them in the
# templates, so they are listed here, and the catalogue test holds each translated. In
# English a code is shown as its words (``in_transit``: in transit).
CODES: dict[str, tuple[str, ...]] = {
    "role": ("admin", "logistics", "qa", "auditor"),
    "live": ("ok", "excursion", "offline", "unavailable", "no_data", "unassigned"),
    "filter": ("open", "late", "revised", "withdrawn", "all"),
    "excursion": ("open", "closed", "withdrawn"),
    "hold": ("open", "released", "rejected"),
    "lot": ("available", "quarantined", "released", "rejected"),
    "shipment": ("planned", "in_transit", "delivered", "cancelled"),
    "meaning": ("authorship", "review", "approval", "responsibility", "verification"),
    "capa": ("open", "investigation", "actions", "effectiveness_check", "closed"),
    "movement": ("receiving", "put_away", "transfer", "loading", "delivery", "return",
                 "return_to_supplier", "destruction"),
    "sensor": ("probe", "position", "door"),
    "alarm": ("excursion", "offline", "unavailable", "record_interval", "rapid_change",
              "battery_low", "calibration_overdue", "humidity"),
}  # fmt: skip
DEFAULT = "zh"  # the seed's users are Chinese GSP distributors


def translations(language: str) -> gettext.NullTranslations:
    if language != "zh":
        return gettext.NullTranslations()
    with CATALOGUE.open("rb") as f:
        catalogue = read_po(f, locale="zh_CN")
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@cache
def environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def gettext_for(language: str) -> Callable[[str], str]:
    return translations_cached(language).gettext


@cache
def translations_cached(language: str) -> gettext.NullTranslations:
    return translations(language)


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The language a person chose (their cookie), else the browser's first we have."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return DEFAULT
