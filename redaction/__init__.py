"""The one redaction filter of the agent, used by both sides: the supervisor runs every log
line it writes (its own, and every line a worker writes on its pipe) through it, and the
workers run it on what they format into errors and reports that leave the VM.

- `redact(text)`, `LineRedactor` (secrets.py): secrets replaced by the one marker, `MARK`,
  whole lines at a time; a private key or an element that spans lines is followed across them.
- `escape_controls(text)` (controls.py): control characters shown as `\\x1b`, `\\u202e`, so
  nothing a worker writes reaches a terminal raw.
- `install_log_redaction()` (logfilter.py): the filter on the HTTP libraries' loggers inside
  a worker, whose debug lines carry whole URLs.

Its own package, importing nothing of the agent: the supervisor must not import workers/,
and a worker must not import supervisor/.
"""

from redaction.controls import escape_controls
from redaction.logfilter import install_log_redaction
from redaction.secrets import (MARK, LineRedactor, may_hold_secret, redact, redact_sas,
                               redact_url_query)

__all__ = ["MARK", "LineRedactor", "escape_controls", "install_log_redaction",
           "may_hold_secret", "redact", "redact_sas", "redact_url_query"]
