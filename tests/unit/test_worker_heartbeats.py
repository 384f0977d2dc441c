"""A worker's heartbeat thread (workers/base.py) against a stand-in channel: what it sends
while the job's loop turns, and that a broker call stands in for a beat (the supervisor counts
every admitted call as one: supervisor/loop.py _dispatch). The supervisor's side — a worker that
stops beating is killed as hung — is tested with real processes in
tests/integration/test_supervisor.py."""

import contextlib
import threading
import time

from ipc.errors import TIMEOUT, IpcError
from workers.base import Worker


class Channel:
    def __init__(self):
        self.beats = 0

    def notify(self, name, args=None):
        if name == "worker.heartbeat":
            self.beats += 1

    def call(self, name, args=None, timeout=None, fds=()):
        return {}, []

    def receive(self, deadline):
        time.sleep(max(0.0, deadline - time.monotonic()))
        raise IpcError(TIMEOUT, "nothing")


@contextlib.contextmanager
def beating_worker():
    """A worker with a 50 ms heartbeat interval, its heartbeat thread running."""
    w = Worker("monitoring")
    w.heartbeat_interval = 0.05
    w.channel = ch = Channel()
    t = threading.Thread(target=w._heartbeats, daemon=True)
    t.start()
    try:
        yield w, ch
    finally:
        w.stopping.set()
        t.join(1)


def test_a_worker_that_calls_the_broker_every_period_sends_no_beat_besides():
    with beating_worker() as (w, ch):
        end = time.monotonic() + 0.5        # ten intervals, a call in each (an idle poll)
        while time.monotonic() < end:
            w.tick()
            w.call("extensions.read_status")
            time.sleep(0.01)
        with_calls = ch.beats
        end = time.monotonic() + 0.5        # ten intervals of a loop that turns, no call
        while time.monotonic() < end:
            w.tick()
            time.sleep(0.01)
        without = ch.beats - with_calls
    assert with_calls == 0
    assert without >= 5, without


def test_a_loop_parked_in_wait_keeps_beating_and_a_loop_stuck_elsewhere_does_not():
    """A job may wait for its next round in one wait() longer than a heartbeat interval (the
    monitoring loop sleeps 30 s between rounds, issue 17): beats go on meanwhile. A loop that
    neither turns nor waits (stuck in a round) stops them, as before."""
    with beating_worker() as (w, ch):
        w.tick()
        w.wait(0.6)                          # twelve intervals in one wait
        parked = ch.beats
        time.sleep(0.6)                      # twelve intervals stuck outside wait()
        stuck = ch.beats - parked
    assert parked >= 8, parked
    assert stuck <= 3, stuck                 # the beats of the first 2 intervals, no more
