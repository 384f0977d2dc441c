"""One worker's supervision: supervisord's state machine, and the only place it changes.

Events: an operator's verb, what the worker says, its exit, and the clock (`tick`). What it
does to the world goes through one seam, `Host`; the loop is the real one, and
tests/unit/test_worker_process.py fakes it to test every transition without a process.
"""

import abc
import logging
import signal
from typing import Optional

from ipc.errors import BUSY, IpcError
from supervisor import states, table
from supervisor.backoff import FailureHistory, next_step
from supervisor.states import (ALIVE, BACKOFF, EXITED, FATAL, RUNNING, STARTABLE, STARTING,
                               STOPPED, STOPPING)

log = logging.getLogger("guestagent.supervisor")

# A worker ends by closing its channel and exiting; one that lives on past a stop's time
# (spec.stop_timeout: its interpreter's teardown, slow in a loaded guest) is killed for it.
CHANNEL_CLOSED = "closed its channel"


class Host(abc.ABC):
    """What a WorkerProcess asks of the world; every call is quick (never blocks)."""
    @abc.abstractmethod
    def now(self) -> float: ...   # the monotonic clock

    @abc.abstractmethod   # a fresh process, channel and log pipe: its pid; raises if not
    def spawn(self, proc: "WorkerProcess") -> int: ...

    @abc.abstractmethod   # to its live process (pid set, not yet reaped)
    def kill(self, proc: "WorkerProcess", signum: int) -> None: ...

    @abc.abstractmethod   # an ended worker says nothing more
    def drop_channel(self, proc: "WorkerProcess") -> None: ...

    @abc.abstractmethod   # reaped: read what it left on its channel and log pipe, close them
    def drain(self, proc: "WorkerProcess") -> None: ...

    @abc.abstractmethod   # answer the operators waiting on it: a state reached, or failed
    def settled(self, proc: "WorkerProcess", reached: Optional[str] = None,
                error: Optional[str] = None) -> None: ...

    @abc.abstractmethod   # its state changed (the service status line)
    def changed(self, proc: "WorkerProcess") -> None: ...

    @abc.abstractmethod   # another worker's state (for `after`); None: no such worker
    def state_of(self, name: str) -> Optional[str]: ...


class WorkerProcess:
    def __init__(self, spec: table.WorkerSpec, host: Host):
        self.spec = spec
        self.host = host
        self.state = STOPPED
        self.pid: Optional[int] = None
        self.spawned_at = 0.0
        self.last_heartbeat = 0.0
        self.deadline: Optional[float] = None   # ready, stop, restart or FATAL-retry time
        self.channel_closed_at: Optional[float] = None
        self.next_run: Optional[float] = None   # PERIODIC: the next run
        self.start_at: Optional[float] = None   # waiting for spec.after: start by this time
        self.restarts = 0
        self.spawns = 0
        self.last_exit: Optional[str] = None
        self.message = ""
        self.failures = FailureHistory()
        self.intent: Optional[str] = None       # "stop" or "restart" when an operator asked
        self.kill_reason: Optional[str] = None  # why we ended it, for last_exit
        self.killed = False                     # SIGKILL sent
        self.held = False                       # the supervisor is stopping: no new process
        self.io = None                          # the Host's own per-process record

    @property
    def name(self) -> str:
        return self.spec.name

    # ---- the one place the state changes ----------------------------------------------
    def _to(self, new: str) -> None:
        if new == self.state:
            return
        if not (self.state == EXITED and new == STOPPED):   # operator stop of an exited one
            states.check(self.state, new)
        self.state = new
        if new in (RUNNING, STOPPED):
            self.host.settled(self, reached=new)
        self.host.changed(self)

    def _spawn(self) -> None:
        now = self.host.now()
        restarts = self.restarts
        # A non-resident worker's next run is not a restart.
        if self.spawns and (self.spec.resident or self.state not in (STOPPED, EXITED)):
            self.restarts += 1
        try:
            pid = self.host.spawn(self)
        except Exception as e:
            self.restarts = restarts
            log.error("event=spawn_failed worker=%s error=%r", self.name, str(e))
            self.last_exit = ("spawn failed: %s" % e)[:200]
            self._to(STARTING)
            self._failed(now)
            return
        self.pid = pid
        self.spawns += 1
        self.spawned_at = now
        self.deadline = now + self.spec.ready_timeout
        self.channel_closed_at = self.start_at = self.kill_reason = None
        self.killed = False
        self.message = ""
        self._to(STARTING)

    def _signal_stop(self) -> None:
        self._to(STOPPING)
        self.deadline = self.host.now() + self.spec.stop_timeout
        self.host.kill(self, self.spec.stop_signal)

    def _failed(self, now: float) -> None:
        """An end nobody asked for: restart after a delay, or FATAL when it flaps."""
        delay = next_step(self.failures, now, self.spec.backoff)
        if delay is not None and self.spec.lifetime == table.ONCE:
            # A run-once job that failed has done real work (and reported NotReady to the
            # platform): never again at once, whatever the flapping window says.
            delay = max(delay, self.spec.backoff.delay)
        if delay is None:
            self._to(FATAL)
            retry = self.spec.fatal_retry
            self.deadline = now + retry if retry else None
            log.error("event=fatal worker=%s failures=%d window=%.1fs last_exit=%r "
                      "retry_in=%s (agentctl start %s revives it)",
                      self.name, len(self.failures.times), self.spec.backoff.window,
                      self.last_exit, "%.0fs" % retry if retry else "never", self.name)
            self.host.settled(self, error="%s is FATAL: %s" % (self.name, self.last_exit))
            return
        self._to(BACKOFF)
        self.deadline = now + delay
        log.info("event=backoff worker=%s delay=%.2fs failures=%d", self.name, delay,
                 len(self.failures.times))

    # ---- operators (agentctl) -------------------------------------------------------------
    def start(self) -> bool:
        """control.start: True when the caller should wait for RUNNING, False when it is."""
        if self.state == RUNNING:
            return False
        if self.state == STOPPING:
            raise IpcError(BUSY, "%s is stopping; try again" % self.name)
        if self.state != STARTING:
            self._operator_start()
        return True

    def stop(self) -> bool:
        """control.stop: True when the caller should wait for STOPPED. It stays stopped."""
        self.next_run = self.start_at = None
        if self.state in ALIVE:
            self.intent = "stop"
            if self.state != STOPPING:
                self._signal_stop()
            return True
        if self.state in (BACKOFF, FATAL, EXITED):
            self.deadline = None
            self._to(STOPPED)
        return False

    def restart(self) -> bool:
        """control.restart: stop (if alive) then start; the caller waits for RUNNING."""
        if self.state in ALIVE:
            self.intent = "restart"
            self.failures.clear()
            if self.state != STOPPING:
                self._signal_stop()
        else:
            self._operator_start()
        return True

    def run_now(self) -> None:
        """control.collect_logs: a run now, or the one under way; the caller waits for EXITED."""
        if self.state == STOPPING:
            raise IpcError(BUSY, "%s is stopping; try again" % self.name)
        if self.state in STARTABLE:
            self.next_run = None
            self._operator_start()

    def _operator_start(self) -> None:
        assert self.state in STARTABLE
        self.failures.clear()   # an operator's start forgives the past (FATAL included)
        self.deadline = None
        self._spawn()

    # ---- the supervisor starting and stopping ---------------------------------------------
    def schedule(self, now: float, after_autostarts: bool) -> None:
        """At start: when a worker waiting for another starts at the latest, a periodic
        worker's first run; then start it if it starts at once."""
        spec = self.spec
        if spec.autostart and spec.after and after_autostarts and spec.after_timeout > 0:
            self.start_at = now + spec.after_timeout
        if spec.lifetime == table.PERIODIC and spec.period:
            self.next_run = now + spec.initial_delay
        if spec.autostart and self.start_at is None:
            self._spawn()

    def reconfigure(self, spec: table.WorkerSpec, now: float) -> None:
        old, self.spec = self.spec, spec
        if spec.period != old.period and self.state not in ALIVE:
            self.next_run = now + spec.period if spec.period else None

    def hold(self) -> None:
        """The supervisor is stopping: no new process from now on."""
        self.held = True
        if self.state in (BACKOFF, FATAL):
            self.deadline = None
            self._to(STOPPED)

    def stop_for_shutdown(self) -> bool:
        """Stop the process, if any; False when there is none to wait for."""
        if self.pid is None:
            return False
        if self.state != STOPPING:
            self.intent = "stop"
            self._signal_stop()
        return True

    # ---- what the worker says ---------------------------------------------------------------
    def ready(self) -> None:
        if self.state != STARTING:
            return
        now = self.host.now()
        self.last_heartbeat = now
        self.deadline = None
        # The failures that led here still count within the window (flapping).
        self._to(RUNNING)
        log.info("event=running worker=%s pid=%s after=%.3fs", self.name, self.pid,
                 now - self.spawned_at)

    def heartbeat(self) -> None:
        self.last_heartbeat = self.host.now()

    def status(self, message: str) -> None:
        self.message = message

    def channel_closed(self) -> None:
        """It closed its channel; if it lives on past spec.stop_timeout, it is ended."""
        if self.pid is not None and self.state != STOPPING:
            self.channel_closed_at = self.host.now()

    # ---- ending ---------------------------------------------------------------------------
    def end(self, reason: str) -> None:
        """End it at once (SIGKILL) for a reason; its restart policy decides what next."""
        if self.pid is None or self.killed:
            return
        self.killed = True
        self.kill_reason = reason
        self.host.kill(self, signal.SIGKILL)
        self.host.drop_channel(self)

    def over_memory(self, rss: int) -> None:
        limit = self.spec.memory_soft_limit
        if self.state != RUNNING or not limit or self.killed or rss <= limit:
            return
        log.warning("event=memory_limit worker=%s pid=%s rss=%d limit=%d action=restart",
                    self.name, self.pid, rss, limit)
        self.kill_reason = "memory soft limit: rss %d > %d" % (rss, limit)
        self._signal_stop()   # intent stays None: counted as a failure, restarted

    def exited(self, what: str, clean_exit: bool) -> None:
        """The process was reaped; `what` describes its status, clean_exit is `exit 0`."""
        now = self.host.now()
        # Forget the pid first, so nothing can signal a reused one; then read what it said
        # last (a run-once worker's outcome in worker.status).
        pid, self.pid = self.pid, None
        self.host.drain(self)
        if self.kill_reason == CHANNEL_CLOSED and clean_exit:
            self.kill_reason = None   # the kill found it exiting by itself: it did not live on
        if self.kill_reason:
            what += " (%s)" % self.kill_reason
        self.last_exit = what[:200]
        self.deadline = self.channel_closed_at = None
        was = self.state
        clean = clean_exit and not self.kill_reason
        log.info("event=exit worker=%s pid=%d status=%r state=%s", self.name, pid, what, was)
        intent, self.intent = self.intent, None
        if self.held or intent == "stop":
            self.host.settled(self, error="%s was stopped" % self.name)
            self._to(STOPPED)
            return
        if intent == "restart":
            self._to(STOPPED)
            self._spawn()
            return
        spec = self.spec
        if spec.restart == table.NEVER or (spec.restart == table.ON_FAILURE and clean):
            self._to(EXITED)
            if clean:
                self.host.settled(self, reached=EXITED)
            else:
                self.host.settled(self, error="%s failed: %s" % (self.name, what))
            if spec.lifetime == table.PERIODIC:
                # The next run: one period after this one ended (a run never overlaps).
                self.next_run = now + spec.period if spec.period else None
                log.log(logging.INFO if clean else logging.WARNING,
                        "event=run_%s worker=%s status=%r next_run_in=%s",
                        "done" if clean else "failed", self.name, what,
                        "%.0fs" % spec.period if spec.period else "never")
            return
        if was == STARTING:
            self.host.settled(self, error="%s exited while starting: %s" % (self.name, what))
        else:
            self.host.settled(self, error="%s failed: %s" % (self.name, what))
        self._failed(now)

    # ---- the clock --------------------------------------------------------------------------
    def hang_after(self) -> float:
        return self.spec.heartbeat_interval * self.spec.heartbeat_misses

    def tick(self, now: float) -> None:
        if self.pid is not None and not self.killed:
            if self.channel_closed_at is not None and self.state != STOPPING:
                # No beat or ready can come any more: a stop's time decides, nothing else.
                if now - self.channel_closed_at > self.spec.stop_timeout:
                    self.end(CHANNEL_CLOSED)
            elif self.state == STARTING and self.deadline is not None and now >= self.deadline:
                self.end("no worker.ready within %.1fs" % self.spec.ready_timeout)
            elif self.state == RUNNING and now - self.last_heartbeat > self.hang_after():
                log.warning("event=hung worker=%s pid=%s silent_for=%.2fs", self.name, self.pid,
                            now - self.last_heartbeat)
                self.end("hung: no heartbeat for %.1fs" % (now - self.last_heartbeat))
            elif self.state == STOPPING and self.deadline is not None and now >= self.deadline:
                log.warning("event=stop_timeout worker=%s pid=%s timeout=%.1fs action=SIGKILL",
                            self.name, self.pid, self.spec.stop_timeout)
                self.killed = True
                self.kill_reason = self.kill_reason or \
                    "did not stop within %.1fs" % self.spec.stop_timeout
                self.host.kill(self, signal.SIGKILL)
            return
        if self.held:
            return
        if self.state in (BACKOFF, FATAL) and self.deadline is not None and now >= self.deadline:
            if self.state == FATAL:
                log.info("event=fatal_retry worker=%s", self.name)
                self.failures.clear()
            self.deadline = None
            self._spawn()
        elif self.state in (STOPPED, EXITED) and self._due(now):
            self.next_run = self.start_at = None
            self._spawn()

    def _due(self, now: float) -> bool:
        if self.next_run is not None and now >= self.next_run:
            return True
        if self.start_at is None:
            return False
        first = self.host.state_of(self.spec.after)
        return now >= self.start_at or first is None or first in (EXITED, FATAL, STOPPED)

    def next_deadline(self) -> Optional[float]:
        """The nearest time tick() has something to do for this worker."""
        times = [self.deadline, self.channel_closed_at and
                 self.channel_closed_at + self.spec.stop_timeout]
        if not self.held:
            times += [self.next_run, self.start_at]
        if self.state == RUNNING:
            times.append(self.last_heartbeat + self.hang_after())
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # ---- what agentctl shows ----------------------------------------------------------------
    def record(self, now: float, rss: Optional[int] = None, cpu: Optional[float] = None) -> dict:
        due = self.next_run if self.next_run is not None else self.start_at
        return {
            "name": self.name, "state": self.state, "pid": self.pid, "user": self.spec.user,
            "uptime": None if self.pid is None else round(now - self.spawned_at, 3),
            "restarts": self.restarts, "last_exit": self.last_exit,
            "rss": rss, "cpu_percent": None if cpu is None else round(cpu, 1),
            "message": self.message[:200], "lifetime": self.spec.lifetime,
            "next_run": None if due is None else round(max(0.0, due - now), 3),
        }
