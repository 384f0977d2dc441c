"""The supervisor's own log: `supervisor.log` (rotated like a worker's, loglines/), the
console, and `security.log`, root 0600, for its security events, with a size budget that no
worker's volume touches."""

import logging
import os
import time
from typing import Optional

from loglines import PRIORITY, Console, LogFile, utc_stamp
from redaction import escape_controls, redact

# The supervisor's own events kept in security.log as well (by the `event=` name its log
# call starts with). Any other record joins them with `extra=SECURITY`.
SECURITY_EVENTS = frozenset({
    "security", "control_denied", "test_hooks", "not_root", "provisioning_gate_closed",
    "user_created", "password_set", "root_password_locked", "sudoers", "authorized_key",
    "key_pair", "sshd_config", "host_keys_generated", "custom_data_executed",
    "previous_vm_forgotten"})
SECURITY = {"security": True}
SECURITY_LOG = "security.log"
SECURITY_MODE = 0o600
SECURITY_MAX_BYTES = 1024 * 1024
SECURITY_BACKUPS = 4
# At most this many lines of one event per window; the rest are counted and the count
# written once, so a flood of one kind (a denied control verb in a loop) cannot rotate the
# history of the others away.
SECURITY_BURST = 200
SECURITY_WINDOW = 60.0


def security_event(record: logging.LogRecord) -> Optional[str]:
    """The event name of a supervisor record that belongs in security.log, or None. Decided
    from the format string, the supervisor's own code, never from the arguments."""
    msg = record.msg
    if not isinstance(msg, str):
        return None
    name = msg[6:].split(" ", 1)[0] if msg.startswith("event=") else ""
    if getattr(record, "security", False):
        return name or "security"
    return name if name in SECURITY_EVENTS else None


class SecurityLog:

    def __init__(self, path: str, max_bytes: int = SECURITY_MAX_BYTES,
                 backups: int = SECURITY_BACKUPS, burst: int = SECURITY_BURST,
                 window: float = SECURITY_WINDOW, clock=time.monotonic):
        self.file = LogFile(path, max_bytes, backups, SECURITY_MODE)
        self.burst, self.window, self.clock = burst, window, clock
        self.counts = {}   # event -> [window start, lines written, lines suppressed]

    def write(self, event: str, line: str) -> None:
        now = self.clock()
        c = self.counts.get(event)
        if c is None or now - c[0] >= self.window:
            if c is not None and c[2]:
                self.file.write("%s WARNING supervisor[%d]: event=security_log_suppressed "
                                "suppressed_event=%s count=%d seconds=%.0f" % (
                                    utc_stamp(), os.getpid(), event, c[2], self.window))
            c = self.counts[event] = [now, 0, 0]
            if len(self.counts) > 256:   # event names are the supervisor's; bounded anyway
                self.counts = {event: c}
        if c[1] >= self.burst:
            c[2] += 1
            return
        c[1] += 1
        self.file.write(line)


class SupervisorHandler(logging.Handler):
    """supervisor.log, security.log beside it (unless given) and the console."""

    def __init__(self, logfile: Optional[LogFile], console: Console,
                 security: Optional[SecurityLog] = None):
        super().__init__()
        self.logfile = logfile
        self.console = console
        if security is None and logfile is not None:
            security = SecurityLog(os.path.join(os.path.dirname(logfile.path), SECURITY_LOG))
        self.security = security

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = redact(escape_controls(record.getMessage()))
            if record.exc_info:
                msg += " | " + redact(escape_controls(
                    logging.Formatter().formatException(record.exc_info).replace("\n", " | ")))
            line = "%s %s supervisor[%d]: %s" % (
                utc_stamp(record.created), record.levelname, record.process, msg)
            if self.logfile is not None:
                self.logfile.write(line)
            event = security_event(record)
            if event is not None and self.security is not None:
                self.security.write(event, line)
            self.console(PRIORITY.get(record.levelname, 6), "supervisor: %s" % msg)
        except Exception:  # logging must never take the supervisor down
            self.handleError(record)
