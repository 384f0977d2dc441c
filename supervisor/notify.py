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

    def send(self, *fields: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(fields).encode("utf-8"), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", "STATUS=" + status) if status else self.send("READY=1")

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + text.replace("\n", " ")[:200])
