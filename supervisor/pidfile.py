"""`Pid.File` (default /var/run/waagent.pid): the supervisor's pid, as waagent's daemon writes
its own there (protocol.md §9.1), for the scripts and tools that read it.

Written once the control socket is bound (so only the one running supervisor writes it), as
root, mode 0644, through a temporary file renamed over the path: a symlink planted at the
path is replaced, never followed. Removed when the supervisor stops, if it still holds this
supervisor's pid. A file left by a supervisor that was killed is simply overwritten at the
next start (the control socket, not this file, decides whether a supervisor runs). waagent
exits at start when the file names a live process; here a live process named there is not
ours (ours would have held the socket) and is logged, then the file is replaced.
"""

import logging
import os
from typing import Optional

log = logging.getLogger("guestagent.supervisor")


def read(path: str) -> Optional[int]:
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write(path: str, pid: int) -> bool:
    """Write `pid` to `path` (0644); False, with the reason logged, if it cannot be written."""
    if not path:
        return False
    former = read(path)
    if former is not None and former != pid and os.path.isdir("/proc/%d" % former):
        log.warning("event=pid_file path=%s former_pid=%d alive: not this agent's; replaced",
                    path, former)
    tmp = "%s.tmp.%d" % (path, pid)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, ("%d\n" % pid).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        log.warning("event=pid_file path=%s error=%r", path, str(e))
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    log.info("event=pid_file path=%s pid=%d", path, pid)
    return True


def remove(path: str, pid: int) -> None:
    """Remove the file if it holds `pid` (another process may have written it since)."""
    if path and read(path) == pid:
        try:
            os.unlink(path)
        except OSError as e:
            log.warning("event=pid_file path=%s remove_error=%r", path, str(e))
