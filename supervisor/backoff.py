"""Restart delays and the flapping window over failure times (ends nobody asked for).

Failures older than the window are forgotten: a worker that ran well restarts at once after
one crash; one that keeps failing waits longer each time, then goes FATAL (circus's flapping).
"""

from collections import deque
from typing import Deque, NamedTuple, Optional


class BackoffPolicy(NamedTuple):   # not a dataclass: see config/keys.py Key
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
        """Record a failure at `now`; how many fall within the window, this one included."""
        self.times.append(now)
        while now - self.times[0] > policy.window:
            self.times.popleft()
        return len(self.times)

    def clear(self) -> None:
        self.times.clear()


def next_step(history: FailureHistory, now: float, policy: BackoffPolicy) -> Optional[float]:
    """After a failure: the delay before restarting, or None when the worker goes FATAL."""
    failures = history.record(now, policy)
    if failures >= policy.max_failures:
        return None
    return policy.delay_for(failures)
