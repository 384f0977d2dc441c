"""Per-worker log capture: each worker's stdout+stderr is one pipe read by the supervisor.

Every line is redacted (redaction.py), written to `<Agent.LogDir>/<worker>.log` (rotated by
size here, not by logrotate: DESIGN.md Ownership) and, when `Logs.Console=y`, forwarded to the
supervisor's stderr with a journald level prefix (`<3>` error, `<4>` warning, `<6>` info,
`<7>` debug; sd-daemon(3)) so `journalctl -u guestagent` keeps the level.

Why a pipe and not a log verb: a pipe also carries tracebacks and anything printed before
logging is set up or after it broke, and a worker cannot write another's log. Lines are capped
at 8 KiB (as OpenSSH caps monitor log messages); a longer line is cut and marked.
"""

import logging
import os
import re
import sys
import time
from typing import Callable, Optional

from supervisor.redaction import LineRedactor, redact

MAX_LINE = 8 * 1024
FILE_MODE = 0o640

# The line format of workers/base.py: "2025-01-02T03:04:05.678Z INFO extensions[123]: message"
WORKER_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT[\d:.]+Z) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<who>[a-z][a-z0-9_-]*\[\d+\]): (?P<msg>.*)$")

PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
PRIORITY_BY_NO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                  logging.CRITICAL: 2}


def utc_stamp(t: Optional[float] = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


class LogFile:
    """An append-only file rotated by size: name.log -> name.log.1 -> ... -> name.log.N."""

    def __init__(self, path: str, max_bytes: int, backups: int):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self.fd = os.open(self.path, flags, FILE_MODE)
        st = os.fstat(self.fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            # Someone else's file where ours should be: do not write into it.
            os.close(self.fd)
            raise PermissionError("%s is not owned by us or is group/world writable" % self.path)
        self.size = st.st_size

    def write(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
        if self.size and self.size + len(data) > self.max_bytes:
            self.rotate()
        try:
            os.write(self.fd, data)
            self.size += len(data)
        except OSError:
            pass  # a full disk must not stop supervision

    def rotate(self) -> None:
        os.close(self.fd)
        if self.backups == 0:
            os.unlink(self.path)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = "%s.%d" % (self.path, i)
                if os.path.lexists(src):
                    os.replace(src, "%s.%d" % (self.path, i + 1))
            os.replace(self.path, self.path + ".1")
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Capture:
    """The reading end of one worker's log pipe: split, cap, level, redact, write, forward."""

    def __init__(self, name: str, logfile: LogFile, forward: Callable[[int, str], None]):
        self.name = name
        self.logfile = logfile
        self.forward = forward
        self.buffer = b""
        self.redactor = LineRedactor()
        self.level = "INFO"   # of the last well-formed line; continuation lines inherit it

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            nl = self.buffer.find(b"\n")
            if nl < 0:
                if len(self.buffer) > MAX_LINE:
                    self._line(self.buffer[:MAX_LINE], cut=True)
                    self.buffer = self.buffer[MAX_LINE:]
                    continue
                return
            raw, self.buffer = self.buffer[:nl], self.buffer[nl + 1:]
            if len(raw) > MAX_LINE:
                self._line(raw[:MAX_LINE], cut=True)
            else:
                self._line(raw)

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer)
            self.buffer = b""

    def _line(self, raw: bytes, cut: bool = False) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        text = self.redactor.line(text)
        if cut:
            text += " [line cut at %d bytes]" % MAX_LINE
        m = WORKER_LINE.match(text)
        if m:
            self.level = m.group("level")
            self.logfile.write(text)
            self.forward(PRIORITY[self.level], "%s: %s" % (m.group("who"), m.group("msg")))
            return
        if text.startswith("Traceback ") or "Error" in text.split(":", 1)[0]:
            self.level = "ERROR"
        # Raw output (a print, a traceback): stamp it so the file stays one format.
        self.logfile.write("%s %s %s[-]: %s" % (utc_stamp(), self.level, self.name, text))
        self.forward(PRIORITY[self.level], "%s: %s" % (self.name, text))


class Console:
    """The supervisor's stderr, with journald level prefixes; honours Logs.Console/Verbose.

    While echoing (protocol.md §3.6: until provisioning has ended, with Logs.Console=y) the
    same lines also go to the system console, `Logs.ConsoleDevice`, which is the serial
    console a VM owner reads in boot diagnostics when the VM never becomes reachable."""

    def __init__(self, enabled: bool = True, verbose: bool = False, stream=None):
        self.enabled = enabled
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.echo_fd = -1
        self.echo_path: Optional[str] = None

    def echo_to(self, path: str) -> Optional[str]:
        """Start echoing to `path`; returns why it cannot, or None."""
        self.echo_off()
        try:
            # No O_CREAT: a missing console is not made a file in /dev. Non-blocking: a
            # console that cannot keep up loses lines, it never stalls the supervisor.
            self.echo_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY
                                   | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            return e.strerror or str(e)
        self.echo_path = path
        return None

    def echo_off(self) -> None:
        if self.echo_fd >= 0:
            os.close(self.echo_fd)
        self.echo_fd, self.echo_path = -1, None

    def __call__(self, priority: int, text: str) -> None:
        # Errors always reach the journal; the rest only with Logs.Console=y.
        if not self.enabled and priority > 3:
            return
        if priority >= 7 and not self.verbose:
            return
        try:
            self.stream.write("<%d>%s\n" % (priority, text))
            self.stream.flush()
        except (OSError, ValueError):
            pass
        if self.echo_fd >= 0 and self.enabled:
            try:
                os.write(self.echo_fd, ("%s guestagent: %s\n" % (utc_stamp(), text)).encode(
                    "utf-8", "replace"))
            except OSError:
                pass  # full (EAGAIN) or gone: the line is in the log file all the same


class SupervisorHandler(logging.Handler):
    """The supervisor's own log: `supervisor.log` (same format and rotation) and the console."""

    def __init__(self, logfile: Optional[LogFile], console: Console):
        super().__init__()
        self.logfile = logfile
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = redact(record.getMessage())
            if record.exc_info:
                msg += " | " + redact(logging.Formatter().formatException(record.exc_info)
                                      ).replace("\n", " | ")
            if self.logfile is not None:
                self.logfile.write("%s %s supervisor[%d]: %s" % (
                    utc_stamp(record.created), record.levelname, record.process, msg))
            self.console(PRIORITY_BY_NO.get(record.levelno, 6), "supervisor: %s" % msg)
        except Exception:  # logging must never take the supervisor down
            self.handleError(record)
