"""Redaction of what the platform client puts into documents and errors (protocol.md §1.7, §2).

SAS tokens travel in URLs (status blob, artifacts profile, packages): their `sig=` value is a
credential, and error texts can end up in a health report or the status blob, which leave
the VM. Protected settings and private keys are never formatted into messages at all.

Log lines get the one log filter, supervisor/redaction.py: the supervisor applies it to every
line a worker writes, and LogRedaction below applies it inside the worker to the HTTP
libraries, whose debug lines carry whole URLs.
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


class LogRedaction:
    """The one log filter (supervisor/redaction.py) applied inside the worker too, on the HTTP
    libraries' loggers: urllib3 logs every request line, query string included, at DEBUG."""

    def filter(self, record) -> bool:
        from supervisor.redaction import redact
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's problem, not a leak
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_FILTER = LogRedaction()
THIRD_PARTY_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "requests")


def install_log_redaction() -> None:
    """Put the filter on the HTTP libraries' loggers (idempotent)."""
    import logging
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
