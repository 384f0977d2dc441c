"""How many messages a worker may send: a token bucket per worker process. The traffic is a
heartbeat every few seconds and a few dozen verbs while provisioning; a flood (filling the
supervisor's log and time) is a violation like any other: the worker is ended."""

FLOOD = "FLOOD"     # the violation's code in the security event
RATE = 20.0         # messages a second, on average (at least 4 heartbeats' worth)
BURST = 200         # messages at once (a provisioning run's verbs fit many times)


class Budget:
    def __init__(self, now: float, heartbeat_interval: float):
        # A configuration with very fast heartbeats must not make them a flood.
        self.rate = max(RATE, 4.0 / max(heartbeat_interval, 0.001))
        self.burst = max(BURST, self.rate * 10)
        self.tokens = self.burst
        self.last = now

    def spend(self, now: float) -> bool:
        """One message at `now`: False when it is over the budget."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
