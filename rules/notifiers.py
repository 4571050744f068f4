"""How an alarm reaches a person: a small contract and a registry of channels by name.

A channel is one class with ``send(target, notice)``; ``webhook`` POSTs JSON (an SMS
gateway is a webhook), ``smtp`` sends an e-mail. A new channel is one class and one
registry line; contacts name their channel.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from coldtrail.errors import ConfigError, TransportError
from coldtrail.redact import redact_text, redact_url


class NotifyError(TransportError):
    """The channel did not take the notice; it is tried again later."""


@dataclass(frozen=True)
class Notice:
    alarm: int
    kind: str
    level: int
    message: str
    sensor: str | None
    location: str | None
    started_at: datetime
    ended_at: datetime | None
    raised_at: datetime
    message_zh: str | None = None
    """The message in Chinese, from the alarm's numbers and the site's zone (rules.texts)."""

    def document(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}

    def subject(self) -> str:
        where = self.location or self.sensor or "?"
        escalated = f" (escalation {self.level})" if self.level else ""
        return f"[ColdTrail alarm {self.alarm}] {self.kind} at {where}{escalated}"


class Notifier(Protocol):
    def send(self, target: str, notice: Notice) -> None: ...


@dataclass(frozen=True)
class NotifierSettings:
    smtp_url: str | None = None
    """``smtp://user:pass@host:port`` (``smtps://`` for TLS); e-mail is off without it."""
    smtp_from: str = "coldtrail@localhost"
    timeout_s: float = 10.0


class WebhookNotifier:
    def __init__(self, settings: NotifierSettings) -> None:
        self._timeout_s = settings.timeout_s

    def send(self, target: str, notice: Notice) -> None:
        if not target.startswith(("http://", "https://")):
            raise NotifyError(f"webhook target must be an http(s) URL: {redact_url(target)}")
        body = json.dumps(notice.document()).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            target,
            data=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": _key(notice)},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            raise NotifyError(f"HTTP {exc.code} from {redact_url(target)}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = redact_text(str(exc), target)
            raise NotifyError(f"{redact_url(target)} unreachable: {reason}") from exc


class SmtpNotifier:
    def __init__(self, settings: NotifierSettings) -> None:
        if settings.smtp_url is None:
            raise ConfigError("e-mail alarms need COLDTRAIL_SMTP_URL")
        parts = urlsplit(settings.smtp_url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                "SMTP URL must be smtp://host:port or smtps://..., got "
                f"{redact_url(settings.smtp_url)!r}"
            )
        self._tls = parts.scheme == "smtps"
        self._host = parts.hostname
        self._port = parts.port or (465 if self._tls else 25)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._from = settings.smtp_from
        self._timeout_s = settings.timeout_s

    def send(self, target: str, notice: Notice) -> None:
        mail = EmailMessage()
        mail["From"] = self._from
        mail["To"] = target
        mail["Subject"] = notice.subject()
        mail["Message-ID"] = f"<{_key(notice)}@coldtrail>"
        said = [notice.message, *([notice.message_zh] if notice.message_zh else [])]
        lines = [*said, ""] + [f"{k}: {v}" for k, v in notice.document().items()]
        mail.set_content("\n".join(lines))
        try:
            smtp: smtplib.SMTP
            if self._tls:
                context = ssl.create_default_context()
                smtp = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout_s, context=context
                )
            else:
                smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
            with smtp:
                if self._user and self._password:
                    smtp.login(self._user, self._password)
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"SMTP {self._host}:{self._port} refused {target}: {exc}") from exc


def _key(notice: Notice) -> str:
    return f"alarm-{notice.alarm}-level-{notice.level}"


NotifierFactory = Callable[[NotifierSettings], Notifier]

NOTIFIERS: dict[str, NotifierFactory] = {
    "webhook": WebhookNotifier,
    "smtp": SmtpNotifier,
}


def build_notifiers(settings: NotifierSettings) -> dict[str, Notifier]:
    """Every channel that can work with these settings (e-mail only with an SMTP URL)."""
    built: dict[str, Notifier] = {}
    for name, factory in NOTIFIERS.items():
        try:
            built[name] = factory(settings)
        except ConfigError:
            continue
    return built
