"""Redaction of the secrets the platform client handles, before anything is logged or raised.

SAS tokens travel in URLs (status blob, artifacts profile, packages): their `sig=` value is a
credential. Protected settings and private keys are never formatted into messages at all.
"""

import re

_SIG = re.compile(r"(?i)(sig=)[^&\s\"'<]*")
REDACTED = "***REDACTED***"


def redact_sas(text: str) -> str:
    """`text` with every SAS signature value replaced."""
    if not text:
        return text
    return _SIG.sub(lambda m: m.group(1) + REDACTED, text)


def redact_url_query(url: str) -> str:
    """A URL with its whole query string replaced (how waagent stores blob URLs in history)."""
    if not url or "?" not in url:
        return url
    return url.split("?", 1)[0] + "?" + REDACTED
