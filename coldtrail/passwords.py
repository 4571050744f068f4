"""The password policy, for people's accounts (erp.people) and the administrator's first
password (settings)."""

from __future__ import annotations

import re

import zxcvbn

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MIN_GUESSES_LOG10 = 8.0
"""zxcvbn's estimate for a password must reach 10^8 guesses (its score 3, "safely
unguessable: moderate protection from an offline slow-hash scenario")."""


def password_problem(password: str, *context: str) -> str | None:
    """Why ``password`` is refused, or None. NIST SP 800-63B 5.1.1.2: a minimum length and a
    check against passwords known to be common or guessable, no composition rules. The
    check is zxcvbn's: its 30 000 most common passwords (from Mark Burnett's 10 million
    leaked ones), English words, names, keyboard walks, repeats, sequences and dates, and
    the ``context`` given (the user's name, the product's)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    # zxcvbn's matchers are quadratic in the length; past 100 characters the first 100
    # already decide (and the rest only add to it).
    found = zxcvbn.zxcvbn(password[:100], user_inputs=_words(*context, "cold trail"))
    if float(found["guesses_log10"]) >= MIN_GUESSES_LOG10:
        return None
    feedback = found["feedback"]
    why = str(feedback.get("warning") or "").rstrip(".") or "it is too easy to guess"
    hints = " ".join(str(h) for h in feedback.get("suggestions") or [])
    return f"password refused: {why}." + (f" {hints}" if hints else "")


def _words(*context: str) -> list[str]:
    """Each context string, its words, and its words run together ("Quinn Auditt": quinn,
    auditt, quinnauditt): zxcvbn matches an input only as a whole."""
    found: list[str] = []
    for text in context:
        words = [w for w in re.split(r"[\W_]+", text.lower()) if w]
        found += [text.lower(), *words, "".join(words)]
    return list(dict.fromkeys(w for w in found if w))
