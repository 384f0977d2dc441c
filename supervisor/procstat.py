"""RSS and CPU% of a process from /proc, for `agentctl status` and the memory limit (psutil
would cost the resident supervisor ~1.9 MiB of imports for them)."""

import os
import time
from typing import Optional

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


class ProcStat:
    def __init__(self, pid: int):
        self.pid = pid
        self._last = None   # (monotonic, cpu seconds) of the previous cpu_percent()

    def rss(self) -> Optional[int]:
        """Resident bytes, or None if the process is gone."""
        try:
            with open("/proc/%d/statm" % self.pid, "rb") as f:
                return int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            return None

    def cpu_percent(self) -> Optional[float]:
        """CPU% since the previous call (psutil's cpu_percent(None)); 0.0 on the first."""
        try:
            with open("/proc/%d/stat" % self.pid, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            now, used = time.monotonic(), (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, ValueError, IndexError):
            return None
        last, self._last = self._last, (now, used)
        if last is None or now <= last[0]:
            return 0.0
        return max(0.0, 100.0 * (used - last[1]) / (now - last[0]))
