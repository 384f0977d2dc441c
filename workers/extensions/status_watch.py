"""Has an extension's status folder changed since the worker last asked? (issue 17's idle CPU)

An idle poll used to ask the broker for every enabled extension's status file, every 6 s:
one round trip that woke the supervisor, for a file nobody had written. Now the worker owns an
inotify instance (made here, under the worker's uid, so its watches count against the worker's
own quota, never root's) and sends it with each `extensions.read_status`; the broker adds a
watch on that handler's status folder before it reads (supervisor/privileged/extensions.py),
so a write after the read is an event here. The worker only drains the descriptor: any event,
or an overflow, means "ask again". It cannot add a watch of its own on a folder it cannot
read, and it learns nothing it is not sent anyway (the names of status files).

When there is no instance (inotify unavailable, the instance limit reached) every poll asks,
as before.
"""

import ctypes
import os
from typing import Optional, Tuple

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def _new_instance() -> Optional[int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    return fd if fd >= 0 else None


class StatusWatch:
    def __init__(self):
        self.fd: Optional[int] = None

    def fds(self) -> Tuple[int, ...]:
        """What to send with `extensions.read_status`: the instance, made on first use."""
        if self.fd is None:
            self.fd = _new_instance()
        return (self.fd,) if self.fd is not None else ()

    def fired(self) -> bool:
        """Drain the events: True when any came (or there is no instance to say)."""
        if self.fd is None:
            return True
        fired = False
        while True:
            try:
                if not os.read(self.fd, 64 * 1024):
                    return fired
                fired = True
            except BlockingIOError:
                return fired
            except OSError:   # not expected; a new instance at the next ask
                os.close(self.fd)
                self.fd = None
                return True
