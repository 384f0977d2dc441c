"""The collector watches its own anonymous memory (waagent's fix for #2749/#2931, done so the
run ends well): a thread samples /proc/self/status every WATCH_PERIOD; above the budget the
collection stops at the next file or chunk and the bundle is closed, marked partial — never
a kill by the slice's limit.

The budget is the smaller of Logs.CollectorAnonLimit and the memory limit of the cgroup we
run in (the slice's MemoryMax, or the limit the supervisor wrote without systemd) minus
UPLOAD_ROOM: the upload that follows imports the platform client (requests alone is ~13 MiB
of anonymous memory), so the collection must leave that much under the limit.
"""

import os
import threading
from typing import Optional

import cgroups

MiB = 1024 * 1024
UPLOAD_ROOM = 16 * MiB
WATCH_PERIOD = 0.2
UNLIMITED = 1 << 60


def anon_bytes(status: str = "/proc/self/status") -> int:
    """Resident anonymous memory plus what of it is swapped out."""
    total = 0
    with open(status) as f:
        for line in f:
            if line.startswith(("RssAnon:", "VmSwap:")):
                total += int(line.split()[1]) * 1024
    return total


def cgroup_limit() -> Optional[int]:
    """The memory limit of the cgroup we run in (v1 memory controller or v2), None if none."""
    try:
        v2, v1 = cgroups.mounts()
        with open("/proc/self/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return None
    limits = []
    for num, controllers, path in lines:
        if "memory" in controllers.split(",") and "memory" in v1:
            limits.append(os.path.join(v1["memory"], path.lstrip("/"), "memory.limit_in_bytes"))
        elif num == "0" and controllers == "":
            for mount in v2:
                limits.append(os.path.join(mount, path.lstrip("/"), "memory.max"))
    found = []
    for path in limits:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            found.append(int(text))
    return min(found) if found else None


class Watch:
    """Samples anonymous memory in a thread; `over` is the reason to stop, once set."""

    def __init__(self, anon_limit: int):
        self.limit = cgroup_limit()
        self.budget = anon_limit if self.limit is None else \
            min(anon_limit, self.limit - UPLOAD_ROOM)
        self.peak = anon_bytes()
        self.over: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def start(self) -> "Watch":
        self.check()
        self._thread.start()
        return self

    def check(self) -> Optional[str]:
        now = anon_bytes()
        self.peak = max(self.peak, now)
        if self.over is None and now > self.budget:
            self.over = ("anonymous memory %.1f MiB over the collector's budget of %.1f MiB%s"
                         % (now / MiB, self.budget / MiB,
                            " (cgroup limit %.1f MiB less %d MiB for the upload)"
                            % (self.limit / MiB, UPLOAD_ROOM // MiB)
                            if self.limit is not None else ""))
        return self.over

    def check_peak(self) -> int:
        self.peak = max(self.peak, anon_bytes())
        return self.peak

    def room_for_upload(self) -> bool:
        return self.limit is None or self.limit - anon_bytes() >= UPLOAD_ROOM

    def _run(self) -> None:
        while not self._stop.wait(WATCH_PERIOD):
            self.check()

    def stop(self) -> None:
        self._stop.set()
