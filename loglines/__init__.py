"""Log lines from a pipe to a rotated file and the journal: each worker's stdout+stderr is
one pipe, read by the supervisor (the spawner's too).

Every line has its control characters escaped and is redacted (the redaction package), whole,
then written to `<Agent.LogDir>/<worker>.log` (rotated by size here, not by logrotate:
DESIGN.md Ownership) and, when `Logs.Console=y`, forwarded to the supervisor's stderr with a
journald level prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug; sd-daemon(3)) so
`journalctl -u guestagent` keeps the level.

The worker's name comes from the pipe, never from the line: every line is filed and forwarded
as `<name>[<pid>]: <text>` with the name of the worker whose pipe it came from. A line in the
worker's own format under its own name keeps its time, level and pid; anything else (a
print, a traceback, a line claiming to be the supervisor's) is kept whole as that worker's
text. The supervisor's own lines (supervisor/logs.py) are `supervisor: …` in the journal and live
in supervisor.log and security.log, which no worker line reaches.

Why a pipe and not a log verb: a pipe also carries tracebacks and anything printed before
logging is set up or after it broke, and a worker cannot write another's log. Lines are capped
at MAX_LINE bytes (as OpenSSH caps monitor log messages): a longer line is redacted and
written up to the cap with a marker, and the rest of it is dropped (never written as lines
of its own, where a secret cut in two would pass the filter).
"""

import os
import re
import sys
import time
from typing import Callable, Optional

from redaction import LineRedactor, escape_controls

MAX_LINE = 8 * 1024
FILE_MODE = 0o640
# Bytes of a dropped line's tail looked at again with the next piece, so that a marker cut
# between two reads (the end of a private key) is still seen.
_OVERLAP = 128

# The line format of workers/base.py: "2025-01-02T03:04:05.678Z INFO extensions[123]: message"
WORKER_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT[\d:.]+Z) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<who>(?P<name>[a-z][a-z0-9_-]*)\[\d+\]): (?P<msg>.*)$")

PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def utc_stamp(t: Optional[float] = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


class LogFile:
    """An append-only file rotated by size: name.log -> name.log.1 -> ... -> name.log.N."""

    def __init__(self, path: str, max_bytes: int, backups: int, mode: int = FILE_MODE):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.mode = mode
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self.fd = os.open(self.path, flags, self.mode)
        st = os.fstat(self.fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            # Someone else's file where ours should be: do not write into it.
            os.close(self.fd)
            raise PermissionError("%s is not owned by us or is group/world writable" % self.path)
        if st.st_mode & 0o777 & ~self.mode:
            os.fchmod(self.fd, self.mode)   # an older, wider file: narrowed, not trusted
        self.size = st.st_size

    def write(self, line: str) -> None:
        # Escaped here too: whatever a caller forgot, no control character reaches a file.
        data = (escape_controls(line.rstrip("\n")) + "\n").encode("utf-8", "replace")
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
    """The reading end of one worker's log pipe: split, cap, escape, redact, level, write,
    forward — every line as the pipe's worker's."""

    def __init__(self, name: str, logfile: LogFile, forward: Callable[[int, str], None]):
        self.name = name
        self.logfile = logfile
        self.forward = forward
        self.buffer = bytearray()
        self.dropping = False   # the rest of an over-long line is being dropped
        self.tail = ""          # the end of what was dropped, seen again with the next piece
        self.redactor = LineRedactor()
        self.level = "INFO"   # of the last well-formed line; continuation lines inherit it

    def pump(self, fd: int, reads: int = 1) -> bool:
        """Feed what the pipe `fd` holds, at most `reads` reads; False at its end."""
        for _ in range(reads):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self.feed(data)
        return True

    def feed(self, data: bytes) -> None:
        pieces = data.split(b"\n")
        for piece in pieces[:-1]:
            self._take(piece)
            if self.dropping:
                self.dropping, self.tail = False, ""
            else:
                self._line(bytes(self.buffer))
            self.buffer.clear()
        self._take(pieces[-1])

    def close(self) -> None:
        if self.buffer and not self.dropping:
            self._line(bytes(self.buffer))
        self.buffer.clear()
        self.dropping, self.tail = False, ""

    def _take(self, piece: bytes) -> None:
        """Part of the current line: kept up to MAX_LINE; beyond, the kept part is written
        (cut) and the rest dropped, only followed by the redactor, so that a private key or
        an element opened in the dropped part still hides the lines after it."""
        if self.dropping:
            self._follow(piece)
            return
        room = MAX_LINE - len(self.buffer)
        if len(piece) <= room:
            self.buffer += piece
            return
        self.buffer += piece[:room]
        self._line(bytes(self.buffer), cut=True)
        self.buffer.clear()
        self.dropping = True
        self._follow(piece[room:])

    def _follow(self, piece: bytes) -> None:
        text = self.tail + escape_controls(piece.decode("utf-8", "replace"))
        self.redactor.line(text)
        self.tail = text[-_OVERLAP:]

    def _line(self, raw: bytes, cut: bool = False) -> None:
        text = escape_controls(raw.decode("utf-8", "replace").rstrip("\r"))
        if cut:
            # Redacted as it is, a value it cuts hides the rest of the line.
            text = self.redactor.line(text) + " [line cut at %d bytes]" % MAX_LINE
        else:
            text = self.redactor.line(text)
        m = WORKER_LINE.match(text)
        if m and m.group("name") == self.name:
            self.level = m.group("level")
            ts, who, text = m.group("ts"), m.group("who"), m.group("msg")
        else:
            # Raw output (a print, a traceback, a line naming someone else): the pipe's
            # worker's, stamped so the file stays one format.
            if text.startswith("Traceback ") or "Error" in text.split(":", 1)[0]:
                self.level = "ERROR"
            ts, who = utc_stamp(), "%s[-]" % self.name
        self.logfile.write("%s %s %s: %s" % (ts, self.level, who, text))
        self.forward(PRIORITY[self.level], "%s: %s" % (who, text))


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
        # One line each: a newline or a CR in the text cannot start a forged journal line.
        text = escape_controls(text)
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
