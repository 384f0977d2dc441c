"""The redaction filter on the HTTP libraries' loggers inside a worker: urllib3 logs every
request line, query string (a SAS signature) included, at DEBUG. The supervisor redacts the
line again when it reads it from the worker's pipe; this keeps it out of the worker's own
handlers (and their exceptions) too."""

import logging

from redaction.secrets import redact


class LogRedaction(logging.Filter):
    def filter(self, record) -> bool:
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
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
