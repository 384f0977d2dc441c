"""sd_notify(3) without libsystemd: READY=1, STATUS=…, WATCHDOG=1, STOPPING=1.

Does nothing when NOTIFY_SOCKET is unset (no systemd, tests). The variable is removed from
our environment once read, so no child inherits it (workers get a clean environment anyway).
"""

import os
import socket
from typing import Optional


class Notifier:
    def __init__(self, environ=os.environ):
        path = environ.pop("NOTIFY_SOCKET", None)
        self.address: Optional[str] = None
        if path and (path.startswith("/") or path.startswith("@")):
            self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = environ.pop("WATCHDOG_USEC", None)
        pid = environ.pop("WATCHDOG_PID", None)
        self.watchdog_interval: Optional[float] = None
        if usec and (pid is None or pid == str(os.getpid())):
            try:
                self.watchdog_interval = int(usec) / 1e6 / 2
            except ValueError:
                pass
        self.sock = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> None:
        if self.sock is not None:
            try:
                self.sock.sendto("\n".join(fields).encode("utf-8"), self.address)
            except OSError:
                pass   # systemd gone or restarting: nothing to tell

    def status(self, text: str, *more: str) -> None:
        self.send(*more, "STATUS=" + text.replace("\n", " ")[:200])
