"""Secrets out of what is logged, stored in errors, or shown: one helper for URLs."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
# Query parameters that carry a credential, by name (case-insensitive, anywhere in the name).
_SECRET_PARAM = re.compile(r"pass|secret|token|key|sig|auth|credential", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password and any credential-like query parameter replaced by
    ``***``; a text that is not a URL comes back with anything after ``://user:`` hidden."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:{HIDDEN}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, HIDDEN if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not parseable as a URL (a bad port, brackets): hide what may be one
        return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", rf"\1{HIDDEN}@", url)


def redact_text(text: str, *urls: str) -> str:
    """``text`` (an error message) with each of ``urls`` in it replaced by its redacted form."""
    for url in urls:
        if url:
            text = text.replace(url, redact_url(url))
    return text


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password, and the password (None if it had none): a credential
    is kept apart from the URL, which is stored, audited and shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(
        parts.password
    )
