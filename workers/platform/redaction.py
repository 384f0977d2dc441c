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


class SasRedactingFilter:
    """A logging filter that rewrites a record's message with SAS signatures redacted.

    urllib3 logs every request line at DEBUG (Logs.Verbose=y), query string included; this
    filter sits on its loggers so a status blob or package SAS never reaches a log file.
    """

    def filter(self, record) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's problem, not a leak
            return True
        redacted = redact_sas(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_FILTER = SasRedactingFilter()
THIRD_PARTY_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection",
                       "urllib3.util.retry", "requests")


def install_log_redaction() -> None:
    """Put the SAS filter on the HTTP libraries' loggers (idempotent)."""
    import logging
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
