"""Restart delays and the flapping window, as plain arithmetic over failure times.

A failure is any end of a worker the supervisor did not ask for (a crash, a kill for a missed
heartbeat, a protocol violation, the memory limit). Failures older than the window are
forgotten, so a worker that ran well for a while restarts at once after one crash (the
restart-latency figure depends on it), and one that keeps failing waits longer each time and
then goes FATAL, as circus's flapping plugin does.
"""

from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional


@dataclass(frozen=True)
class BackoffPolicy:
    delay: float = 1.0          # delay before the 2nd restart within the window
    max_delay: float = 60.0
    window: float = 300.0       # seconds over which failures count
    max_failures: int = 5       # this many failures within the window: FATAL

    def delay_for(self, failures: int) -> float:
        """Delay before the restart that follows the n-th failure within the window (n >= 1)."""
        if failures <= 1:
            return 0.0
        return min(self.max_delay, self.delay * (2 ** (failures - 2)))


class FailureHistory:
    def __init__(self):
        self.times: Deque[float] = deque()

    def record(self, now: float, policy: BackoffPolicy) -> int:
        """Record a failure at `now`; return how many fall within the window, this one included."""
        self.times.append(now)
        self.prune(now, policy)
        return len(self.times)

    def prune(self, now: float, policy: BackoffPolicy) -> None:
        while self.times and now - self.times[0] > policy.window:
            self.times.popleft()

    def clear(self) -> None:
        self.times.clear()


def next_step(history: FailureHistory, now: float, policy: BackoffPolicy) -> Optional[float]:
    """After a failure: the delay before restarting, or None when the worker goes FATAL."""
    failures = history.record(now, policy)
    if failures >= policy.max_failures:
        return None
    return policy.delay_for(failures)
