"""The monitoring loop's scheduling: every wanted check runs at start and then on its own
period, one check's failure never stops another, and an unwanted check never runs.

The worker here is a stand-in for the real one (its channel, heartbeats and SIGTERM are tested
in tests/integration/): wait() advances a fake clock, so hours of periods run in a millisecond.
"""

from workers.monitoring.check import Check
from workers.monitoring.job import run


class Stop(BaseException):
    pass


class FakeWorker:
    heartbeat_interval = 5.0

    def __init__(self, clock, until):
        self.clock, self.until = clock, until
        self.ready_called = False
        self.statuses = []
        self.waits = 0

    def ready(self):
        self.ready_called = True

    def status(self, message):
        self.statuses.append(message)

    def tick(self):
        if self.clock[0] >= self.until:
            raise Stop()

    def wait(self, seconds):
        # It may sleep past a heartbeat: the real wait() beats meanwhile (workers/base.py).
        assert 0 <= seconds
        if seconds > 0:
            self.waits += 1
        self.clock[0] += max(seconds, 0.001)


def drive(table, conf, until):
    clock = [0.0]
    w = FakeWorker(clock, until)
    try:
        run(w, conf, table, clock=lambda: clock[0])
    except Stop:
        pass
    return w


def test_each_check_runs_at_start_and_on_its_own_period_and_failures_stay_contained():
    seen = {"a": [], "b": [], "off": []}

    def a(ctx):
        seen["a"].append(1)

    def b(ctx):
        seen["b"].append(1)
        raise RuntimeError("b is broken")

    table = (Check("a", "A.Period", lambda c: True, a),
             Check("b", "B.Period", lambda c: True, b),
             Check("off", "A.Period", lambda c: False, lambda ctx: seen["off"].append(1)))
    w = drive(table, {"A.Period": 30, "B.Period": 300}, until=3600)
    assert w.ready_called
    assert 119 <= len(seen["a"]) <= 121      # 0, 30, ..., 3570 (+ the one at 3600)
    assert 12 <= len(seen["b"]) <= 13        # b raised every time and still ran every period
    assert seen["off"] == []


def test_nothing_wanted_is_said_in_status_and_the_loop_still_ticks():
    w = drive((Check("x", "X", lambda c: False, lambda ctx: None),), {"X": 1}, until=60)
    assert w.statuses and "nothing to monitor" in w.statuses[0]


def test_a_check_that_keeps_failing_the_same_way_is_warned_once_until_it_recovers(caplog):
    """A check that fails every 30 s with the same error (not an Azure VM, say) warns once, not
    120 times an hour; a different error, or the same one after a success, warns again."""
    errors = iter(["same"] * 5 + [None] + ["same"] * 2 + ["other"] * 2)

    def flaky(ctx):
        e = next(errors, None)
        if e:
            raise RuntimeError(e)

    caplog.set_level("DEBUG", logger="monitoring")
    drive((Check("f", "F", lambda c: True, flaky),), {"F": 30}, until=300)
    warned = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING" and "check_failed" in r.getMessage()]
    assert warned == ["event=check_failed check=f error='same'"] * 2 + \
        ["event=check_failed check=f error='other'"]
    repeats = [r for r in caplog.records if r.levelname == "DEBUG" and "check_failed" in
               r.getMessage()]
    assert len(repeats) == 4 + 1 + 1   # the repeats of each run, still in the debug log


def test_checks_of_one_period_stay_in_one_round_and_the_loop_wakes_only_for_rounds():
    """Each check takes time (the clock moves while it runs): the next round of checks with
    the same period is still one wake-up, not one per check drifting apart (issue 17)."""
    clock = [0.0]
    runs = {"a": [], "b": [], "c": []}

    def slow(name):
        def run(ctx):
            runs[name].append(clock[0])
            clock[0] += 0.25
        return run

    table = tuple(Check(n, "P", lambda c: True, slow(n)) for n in ("a", "b", "c"))
    w = FakeWorker(clock, 3600)
    try:
        run(w, {"P": 30}, table, clock=lambda: clock[0])
    except Stop:
        pass
    assert 119 <= len(runs["c"]) <= 121
    assert w.waits <= len(runs["a"]) + 1, w.waits     # one sleep per round, none to tick
    # The last round's checks ran back to back, as the first round's did.
    assert runs["c"][-1] - runs["a"][-1] < 1.0
