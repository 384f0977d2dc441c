"""The worker state machine (supervisor/process.py) through its seam, without a process.

`FakeHost` stands in for the loop's OS calls (spawn, signals, reaping, the clock) because they
are exactly what this layer must not need; the integration tests drive the real ones.
"""

import os
import re
import signal

import pytest

from ipc.errors import BUSY, IpcError
from supervisor import table
from supervisor.backoff import BackoffPolicy
from supervisor.process import Host, WorkerProcess
from supervisor.states import (BACKOFF, EXITED, FATAL, RUNNING, STARTING, STOPPED, STOPPING,
                               TRANSITIONS)

KILL, TERM = signal.SIGKILL, signal.SIGTERM


class FakeHost(Host):
    def __init__(self):
        self.t = 1000.0
        self.pids = iter(range(100, 10000))
        self.spawned = []
        self.signals = []
        self.dropped = []
        self.drained = []
        self.news = []
        self.seen = []          # every state the worker went through, in order
        self.others = {}
        self.spawn_error = None

    def now(self):
        return self.t

    def spawn(self, proc):
        if self.spawn_error:
            raise self.spawn_error
        pid = next(self.pids)
        self.spawned.append(pid)
        return pid

    def kill(self, proc, signum):
        assert proc.pid is not None
        self.signals.append((proc.pid, signum))

    def drop_channel(self, proc):
        self.dropped.append(proc.pid)

    def drain(self, proc):
        assert proc.pid is None      # forgotten before anything else
        self.drained.append(proc.name)

    def settled(self, proc, reached=None, error=None):
        self.news.append((reached, error))

    def changed(self, proc):
        self.seen.append(proc.state)

    def state_of(self, name):
        return self.others.get(name)


def spec(**kw):
    base = dict(name="w", module="m", user="u", ready_timeout=5.0, heartbeat_interval=1.0,
                heartbeat_misses=3, backoff=BackoffPolicy(delay=1.0, max_delay=4.0, window=60.0,
                                                          max_failures=4),
                fatal_retry=0.0, stop_timeout=2.0)
    base.update(kw)
    return table.WorkerSpec(**base)


def make(**kw):
    host = FakeHost()
    return WorkerProcess(spec(**kw), host), host


def running(**kw):
    p, host = make(**kw)
    p.schedule(host.t, False)
    p.heartbeat()   # worker.hello
    p.ready()
    assert p.state == RUNNING
    return p, host


def crash(p, host, what="exit 1", clean=False):
    pid = p.pid
    drained = len(host.drained)
    p.exited(what, clean)
    assert len(host.drained) == drained + 1 and p.pid != pid
    return pid


def test_autostart_says_ready_and_runs():
    p, host = make()
    p.schedule(host.t, False)
    assert (p.state, p.pid, host.spawned) == (STARTING, 100, [100])
    host.t += 0.5
    p.ready()
    assert p.state == RUNNING and (RUNNING, None) in host.news
    assert host.seen == [STARTING, RUNNING]
    p.ready()                       # once is enough; a second one changes nothing
    assert host.seen == [STARTING, RUNNING]


def test_no_ready_within_the_ready_timeout_is_killed_and_restarted():
    p, host = make()
    p.schedule(host.t, False)
    host.t += 4.9
    p.tick(host.t)
    assert host.signals == []
    host.t += 0.2
    p.tick(host.t)
    assert host.signals == [(100, KILL)] and host.dropped == [100]
    p.tick(host.t)                  # killed once, not again
    assert host.signals == [(100, KILL)]
    crash(p, host, "killed by SIGKILL")
    assert p.state == BACKOFF and "no worker.ready within 5.0s" in p.last_exit
    assert host.news[-1][1].startswith("w exited while starting")
    p.tick(host.t)                  # the first failure in the window: at once
    assert (p.state, p.pid, p.restarts) == (STARTING, 101, 1)


def test_missed_heartbeats_end_a_running_worker():
    p, host = running()
    for _ in range(5):              # beats within the interval keep it alive
        host.t += 1.0
        p.heartbeat()
        p.tick(host.t)
    assert host.signals == []
    assert p.next_deadline() == host.t + 3.0
    host.t += 3.1
    p.tick(host.t)
    assert host.signals == [(100, KILL)]
    crash(p, host, "killed by SIGKILL")
    assert "hung: no heartbeat" in p.last_exit and p.state == BACKOFF


def test_backoff_doubles_then_flapping_goes_fatal_until_an_operator_starts_it():
    p, host = running()
    delays = []
    while p.state != FATAL:
        crash(p, host)
        if p.state == FATAL:
            break
        assert p.state == BACKOFF
        delays.append(round(p.deadline - host.t, 3))
        host.t = p.deadline - 0.01
        p.tick(host.t)
        assert p.state == BACKOFF   # not before its time
        host.t = p.deadline
        p.tick(host.t)
        assert p.state == STARTING
    assert delays == [0.0, 1.0, 2.0]
    assert host.news[-1][1].startswith("w is FATAL")
    host.t += 10 ** 6               # fatal_retry=0: it waits for an operator
    p.tick(host.t)
    assert p.state == FATAL and p.next_deadline() is None
    assert p.start() is True
    assert p.state == STARTING and len(p.failures.times) == 0


def test_a_fatal_worker_is_retried_after_the_retry_period():
    p, host = running(fatal_retry=30.0)
    for _ in range(4):
        crash(p, host)
        if p.state == BACKOFF:
            host.t = p.deadline
            p.tick(host.t)
    assert p.state == FATAL
    host.t += 30.0
    p.tick(host.t)
    assert p.state == STARTING and len(p.failures.times) == 0


def test_a_clean_once_exit_is_exited_and_not_restarted():
    p, host = running(lifetime=table.ONCE, restart=table.ON_FAILURE)
    p.status("provisioned")
    crash(p, host, "exit 0", clean=True)
    assert (p.state, p.message, p.last_exit) == (EXITED, "provisioned", "exit 0")
    assert host.news[-1] == (EXITED, None)
    host.t += 10 ** 6
    p.tick(host.t)
    assert p.state == EXITED and host.spawned == [100]


def test_a_failed_once_run_waits_at_least_the_backoff_delay():
    p, host = running(lifetime=table.ONCE, restart=table.ON_FAILURE)
    crash(p, host, "exit 2")
    assert p.state == BACKOFF and p.deadline - host.t == 1.0   # not at once


def test_periodic_runs_on_its_timer_and_its_runs_are_not_restarts():
    p, host = make(lifetime=table.PERIODIC, restart=table.NEVER, autostart=False,
                   initial_delay=5.0, period=60.0)
    p.schedule(host.t, False)
    assert p.state == STOPPED and p.next_deadline() == host.t + 5.0
    host.t += 5.0
    p.tick(host.t)
    assert p.state == STARTING
    p.ready()
    crash(p, host, "exit 0", clean=True)
    assert p.state == EXITED and p.next_run == host.t + 60.0
    host.t += 60.0
    p.tick(host.t)
    assert p.state == STARTING and p.restarts == 0 and len(host.spawned) == 2
    crash(p, host, "exit 3")            # a failed run: logged, waits for the next one
    assert p.state == EXITED and p.next_run == host.t + 60.0 and len(p.failures.times) == 0


def test_run_now_starts_a_periodic_worker_or_joins_the_run_under_way():
    p, host = make(lifetime=table.PERIODIC, restart=table.NEVER, autostart=False, period=60.0)
    p.schedule(host.t, False)
    p.run_now()
    assert p.state == STARTING and p.next_run is None
    p.run_now()
    assert host.spawned == [100]
    p.stop()
    with pytest.raises(IpcError) as e:
        p.run_now()
    assert e.value.code == BUSY


def test_stop_signals_then_kills_at_the_stop_timeout_and_it_stays_stopped():
    p, host = running()
    assert p.stop() is True
    assert p.state == STOPPING and host.signals == [(100, TERM)]
    host.t += 1.9
    p.tick(host.t)
    assert host.signals == [(100, TERM)]
    host.t += 0.2
    p.tick(host.t)
    assert host.signals == [(100, TERM), (100, KILL)]
    crash(p, host, "killed by SIGKILL")
    assert p.state == STOPPED and "did not stop within 2.0s" in p.last_exit
    assert (STOPPED, None) in host.news
    host.t += 10 ** 6
    p.tick(host.t)
    assert p.state == STOPPED and host.spawned == [100]


def test_stop_of_a_worker_without_a_process():
    p, host = running(lifetime=table.ONCE, restart=table.ON_FAILURE)
    crash(p, host, "exit 0", clean=True)
    assert p.stop() is False and p.state == STOPPED
    p, host = running()
    crash(p, host)
    assert p.state == BACKOFF and p.stop() is False and p.state == STOPPED
    host.t += 100
    p.tick(host.t)
    assert p.state == STOPPED


def test_restart_stops_then_starts_a_new_process():
    p, host = running()
    p.restart()
    assert p.state == STOPPING and host.signals == [(100, TERM)]
    crash(p, host, "exit 0", clean=True)
    assert (p.state, p.pid, p.restarts) == (STARTING, 101, 1)
    assert host.seen[-3:] == [STOPPING, STOPPED, STARTING]
    p, host = make()
    p.schedule(host.t, False)
    p.stop()
    crash(p, host)
    p.restart()                      # from STOPPED: a start
    assert p.state == STARTING


def test_start_answers_at_once_when_running_and_refuses_while_stopping():
    p, host = running()
    assert p.start() is False
    p.stop()
    with pytest.raises(IpcError) as e:
        p.start()
    assert e.value.code == BUSY


def test_over_the_memory_limit_is_stopped_and_counted_as_a_failure():
    p, host = running(memory_soft_limit=1000)
    p.over_memory(999)
    assert p.state == RUNNING
    p.over_memory(1001)
    assert p.state == STOPPING and host.signals == [(100, TERM)]
    crash(p, host, "exit 0", clean=True)
    assert p.state == BACKOFF and "memory soft limit" in p.last_exit


def test_a_worker_that_closes_its_channel_but_lives_is_ended():
    p, host = running()
    p.heartbeat()
    p.channel_closed()
    grace = p.spec.stop_timeout   # closing its channel is how a worker ends: a stop's time
    host.t += grace * 0.9
    p.tick(host.t)
    assert host.signals == []
    host.t += grace * 0.2
    p.tick(host.t)
    assert host.signals == [(100, KILL)]
    crash(p, host, "killed by SIGKILL")
    assert "closed its channel" in p.last_exit and p.state == BACKOFF


def test_a_periodic_run_that_closed_its_channel_and_exits_0_late_is_a_clean_run():
    # CI, a loaded TCG guest: the log collector closed its channel, then its interpreter took
    # over a second to end; the kill found it already exiting (status exit 0), and the run was
    # reported failed, so `agentctl collect-logs` failed on a bundle that was uploaded.
    p, host = make(lifetime=table.PERIODIC, restart=table.NEVER, autostart=False, period=60.0)
    p.schedule(host.t, False)
    p.run_now()
    p.ready()
    p.channel_closed()
    host.t += p.spec.stop_timeout + 0.1
    p.tick(host.t)
    assert host.signals == [(100, KILL)]
    crash(p, host, "exit 0", clean=True)
    assert p.state == EXITED and p.last_exit == "exit 0"
    assert host.news[-1] == (EXITED, None)


def test_end_kills_once_and_the_restart_policy_decides():
    p, host = running()
    p.end("protocol violation: DENIED")
    p.end("again")
    assert host.signals == [(100, KILL)] and host.dropped == [100]
    crash(p, host, "killed by SIGKILL")
    assert p.state == BACKOFF and p.last_exit == "killed by SIGKILL (protocol violation: DENIED)"


def test_a_spawn_that_fails_backs_off_and_is_not_a_restart():
    p, host = make()
    host.spawn_error = OSError(24, "Too many open files")
    p.schedule(host.t, False)
    assert p.state == BACKOFF and p.pid is None and p.restarts == 0
    assert p.last_exit.startswith("spawn failed")
    host.spawn_error = None
    p.tick(host.t)
    assert p.state == STARTING


def test_a_worker_after_another_starts_when_it_ends_or_at_its_timeout():
    p, host = make(after="first", after_timeout=30.0)
    host.others["first"] = STARTING
    p.schedule(host.t, True)
    assert p.state == STOPPED
    host.t += 10
    p.tick(host.t)
    assert p.state == STOPPED
    host.others["first"] = EXITED
    p.tick(host.t)
    assert p.state == STARTING and p.start_at is None
    p, host = make(after="first", after_timeout=30.0)
    host.others["first"] = RUNNING
    p.schedule(host.t, True)
    host.t += 30
    p.tick(host.t)
    assert p.state == STARTING


def test_shutdown_stops_and_never_restarts():
    p, host = running()
    p.hold()
    assert p.stop_for_shutdown() is True and p.state == STOPPING
    crash(p, host, "exit 1")                # even a failure: stopped, not restarted
    assert p.state == STOPPED and p.stop_for_shutdown() is False
    assert host.news[0] == (RUNNING, None) and host.news[1][1] == "w was stopped"
    p, host = running()
    crash(p, host)
    assert p.state == BACKOFF
    p.hold()
    assert p.state == STOPPED
    host.t += 100
    p.tick(host.t)
    assert p.state == STOPPED and p.next_deadline() is None


def test_every_transition_it_makes_is_one_the_table_allows():
    """Walk many event sequences; changed() sees each state, each step must be allowed."""
    import random
    rnd = random.Random(7)
    events = ["ready", "heartbeat", "tick", "exit0", "exit1", "start", "stop", "restart",
              "end", "memory", "run_now"]
    for _ in range(200):
        p, host = make(memory_soft_limit=10,
                       lifetime=rnd.choice([table.SERVICE, table.ONCE, table.PERIODIC]),
                       restart=rnd.choice([table.ALWAYS, table.ON_FAILURE, table.NEVER]),
                       period=rnd.choice([0.0, 5.0]))
        p.schedule(host.t, False)
        for _ in range(30):
            host.t += rnd.choice([0.0, 0.5, 3.0, 10.0])
            ev = rnd.choice(events)
            try:
                if ev == "ready":
                    p.ready()
                elif ev == "heartbeat":
                    p.heartbeat()
                elif ev == "tick":
                    p.tick(host.t)
                elif ev in ("exit0", "exit1") and p.pid is not None:
                    p.exited("exit %s" % ev[-1], ev == "exit0")
                elif ev == "start" and p.state != STARTING:
                    p.start()
                elif ev == "stop":
                    p.stop()
                elif ev == "restart":
                    p.restart()
                elif ev == "end":
                    p.end("test")
                elif ev == "memory":
                    p.over_memory(11)
                elif ev == "run_now":
                    p.run_now()
            except IpcError as e:
                assert e.code == BUSY
            assert (p.pid is not None) == (p.state in (STARTING, RUNNING, STOPPING)) or \
                (p.state == STARTING and p.pid is None and p.last_exit.startswith("spawn")), \
                (p.state, p.pid)
        states = [STOPPED] + host.seen
        for old, new in zip(states, states[1:]):
            assert new in TRANSITIONS[old] or (old, new) == (EXITED, STOPPED), (old, new)


def test_no_other_module_changes_a_worker_state():
    here = os.path.join(os.path.dirname(__file__), "..", "..", "supervisor")
    for folder, _, files in os.walk(here):
        for name in files:
            if name.endswith(".py") and name != "process.py":
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                assert not re.search(r"\.state\s*=[^=]", text), name
