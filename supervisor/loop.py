"""The supervisor's event loop: one thread owns every worker record, channel, log pipe and
control connection; it never blocks (DESIGN.md principle 6).

Each turn: wait in select() until a descriptor is ready or the nearest deadline (a restart
delay, a ready or stop timeout, a heartbeat deadline, the memory check, the watchdog); read
what arrived; read the signal bytes (signal.set_wakeup_fd); reap exited workers by their pids
(waitpid per pid, never -1, so a broker handler may run subprocesses in its threads); then
move every worker along its state machine.

Supervisor events are single-line `key=value` records in supervisor.log and the journal.
"""

import collections
import errno
import grp
import logging
import os
import pwd
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import config
from ipc import envelope, framing
from ipc.channel import recv_some, send_frame
from ipc.errors import (BUSY, FAILED, INTERNAL, NOT_FOUND, TIMEOUT, UNAVAILABLE,
                        VIOLATIONS, FrameError, IpcError)
from ipc.verbs import check_result, lookup
from supervisor import VERSION, WAAGENT_VERSION, broker, control, spawn, states, table
from supervisor.backoff import FailureHistory, next_step
from supervisor.logcapture import Capture, LogFile
from supervisor.policy import PROVISIONING, Policy
from supervisor.procstat import ProcStat
from supervisor.states import (ALIVE, BACKOFF, EXITED, FATAL, RUNNING, STARTABLE, STARTING,
                               STOPPED, STOPPING)

log = logging.getLogger("guestagent.supervisor")

MAX_IN_FLIGHT = 8          # slow requests one worker may have outstanding (more: BUSY)
CHANNEL_CLOSED_GRACE = 1.0  # a worker that closed its channel but lives on is killed after this
CONTROL_IDLE = 300.0       # an idle control connection is closed after this
READY_WAIT_MAX = 30.0      # READY=1 is sent at the latest this long after start


class Worker:
    """The mutable run-time side of one worker-table record."""

    def __init__(self, spec: table.WorkerSpec):
        self.spec = spec
        self.state = STOPPED
        self.pid: Optional[int] = None
        self.channel: Optional[socket.socket] = None
        self.decoder: Optional[framing.FrameDecoder] = None
        self.log_fd: Optional[int] = None
        self.capture: Optional[Capture] = None
        self.session = None
        self.generation = 0
        self.spawned_at = 0.0            # monotonic
        self.running_since: Optional[float] = None
        self.last_heartbeat = 0.0
        self.deadline: Optional[float] = None   # meaning depends on state
        self.channel_closed_at: Optional[float] = None
        self.restarts = 0
        self.spawns = 0
        self.last_exit: Optional[str] = None
        self.message = ""
        self.failures = FailureHistory()
        self.intent: Optional[str] = None       # "stop" or "restart" when an operator asked
        self.kill_reason: Optional[str] = None  # why we ended it, for last_exit
        self.killed = False
        self.in_flight = 0
        self.proc: Optional[ProcStat] = None
        self.next_run: Optional[float] = None   # PERIODIC: monotonic time of the next run
        self.start_at: Optional[float] = None   # waiting for spec.after: start by this time

    @property
    def name(self) -> str:
        return self.spec.name


class ControlConn:
    def __init__(self, sock: socket.socket, peer: control.Peer):
        self.sock = sock
        self.peer = peer
        self.decoder = framing.FrameDecoder(framing.CONTROL_CAP)
        self.out = collections.deque()   # (bytes, fds)
        self.last_active = time.monotonic()
        self.closed = False
        self.close_after_send = False


class Waiter:
    """A control request answered later: start/restart wait for RUNNING, stop for STOPPED."""

    def __init__(self, conn: ControlConn, ident: int, worker: str, want: str, deadline: float):
        self.conn, self.ident, self.worker, self.want, self.deadline = \
            conn, ident, worker, want, deadline


class Supervisor:
    def __init__(self, conf, config_path: str, console, python: str = sys.executable):
        self.conf = conf
        self.config_path = config_path
        self.console = console
        self.python = python
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.table = table.build(conf)
        self.workers: Dict[str, Worker] = {n: Worker(s) for n, s in self.table.items()}
        self.test_hooks = bool(conf["Agent.TestHooks"])
        self.policy = Policy(test_hooks=self.test_hooks, conf=conf)   # gates from disk
        for verb in self.policy.permits:
            if not verb.startswith("worker.") and verb not in broker.HANDLERS:
                raise RuntimeError("policy grants %s but the broker has no handler" % verb)
        self.sel = selectors.DefaultSelector()
        self.cancel = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="broker")
        self.done_queue: "queue.Queue" = queue.Queue()
        self.waiters: List[Waiter] = []
        self.conns: Dict[int, ControlConn] = {}
        self.logfiles: Dict[str, LogFile] = {}
        self.shutting_down = False
        self.stop_order: List[str] = []
        self.exit_code = 0
        self.ready_sent = False
        self.notifier = None
        self.next_memory_check = time.monotonic()
        self.next_watchdog = time.monotonic()
        self.last_status_line = ""
        self.admin_gid = control.admin_gid()
        self.proc = ProcStat(os.getpid())
        self.spawn_method = conf["Agent.Spawner"]   # read at start only
        self.zygote = None   # supervisor/spawner.py Zygote when Agent.Spawner=zygote

    # ---- set-up -------------------------------------------------------------------------
    def _console_echo(self) -> None:
        """Echo the log to the system console while provisioning has not ended this boot
        (protocol.md §3.6): the one place a VM owner can read why a VM never came up."""
        want = (self.conf["Logs.Console"] and PROVISIONING not in self.policy.closed_gates
                and self.conf["Logs.ConsoleDevice"])
        if not want:
            if self.console.echo_path is not None:
                log.info("event=console_echo state=off device=%s", self.console.echo_path)
                self.console.echo_off()
            return
        if self.console.echo_path == want:
            return
        why = self.console.echo_to(want)
        if why is None:
            log.info("event=console_echo state=on device=%s until=provisioning_ended", want)
        else:
            log.warning("event=console_echo state=unavailable device=%s error=%r", want, why)

    def open(self, notifier) -> None:
        self.notifier = notifier
        self._console_echo()
        # Signals: the C handler writes the signal number to this socket; select wakes up.
        self.sig_r, self.sig_w = socket.socketpair()
        for s in (self.sig_r, self.sig_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.sig_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda s, f: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.sel.register(self.sig_r, selectors.EVENT_READ, self._on_signal)
        # Slow verbs finishing in the pool wake the loop through this pair.
        self.done_r, self.done_w = socket.socketpair()
        for s in (self.done_r, self.done_w):
            s.setblocking(False)
        self.sel.register(self.done_r, selectors.EVENT_READ, self._on_done)
        self.listener = control.bind(self.conf["Agent.RuntimeDir"], self.admin_gid)
        self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept)
        log.info("event=start pid=%d version=%s config=%s control=%s test_hooks=%s "
                 "spawner=%s", os.getpid(), VERSION, self.config_path,
                 os.path.join(self.conf["Agent.RuntimeDir"], control.SOCKET_NAME),
                 "on" if self.test_hooks else "off", self.spawn_method)
        if self.test_hooks:
            log.warning("event=test_hooks Agent.TestHooks=y: debug verbs granted; "
                        "never use this setting in production")
        if self.spawn_method == "zygote":
            # Before the first worker, so before any worker has sent us anything: the
            # spawner is a fresh interpreter either way (see supervisor/spawner.py).
            from supervisor.spawner import Zygote
            env = {k: v for k, v in spawn.worker_env("spawner", self.config_path, "INFO").items()
                   if k in ("PATH", "LANG", "HOME")}
            if self.test_hooks and os.environ.get(spawn.ENV_TEST_DIR):
                env[spawn.ENV_TEST_DIR] = os.environ[spawn.ENV_TEST_DIR]
            self.zygote = Zygote(self.python, env, self.sel, lambda: Capture(
                "spawner", self.logfile("spawner"), self.console), log)
            self.zygote.start(wait=True)
        now = time.monotonic()
        for w in self.workers.values():
            self._schedule(w, now)
            if w.spec.autostart and w.start_at is None:
                self.spawn(w)

    def _schedule(self, w: Worker, now: float) -> None:
        """At start: when a worker that waits for another starts, and a periodic worker's
        first run (the timers _tick fires; the loop sleeps until the nearest one)."""
        spec = w.spec
        if spec.autostart and spec.after and spec.after in self.workers \
                and self.workers[spec.after].spec.autostart and spec.after_timeout > 0:
            w.start_at = now + spec.after_timeout
        if spec.lifetime == table.PERIODIC and spec.period:
            w.next_run = now + spec.initial_delay

    def logfile(self, name: str) -> LogFile:
        lf = self.logfiles.get(name)
        if lf is None:
            lf = LogFile(os.path.join(self.conf["Agent.LogDir"], name + ".log"),
                         self.conf["Agent.LogMaxBytes"], self.conf["Agent.LogBackups"])
            self.logfiles[name] = lf
        return lf

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        while True:
            now = time.monotonic()
            # Sleep until the nearest timer: an idle tree wakes only for heartbeats and
            # the memory check (no polling).
            timeout = max(0.0, self._next_deadline(now) - now)
            for key, mask in self.sel.select(timeout):
                try:
                    key.data(key, mask)
                except Exception:  # a bug in one handler must not take the tree down
                    log.exception("event=loop_error handler=%s",
                                  getattr(key.data, "__name__", "?"))
            self._reap()
            self._tick(time.monotonic())
            if self.shutting_down and not self._alive():
                break
        self._close()
        return self.exit_code

    def _next_deadline(self, now: float) -> float:
        deadlines = [self.next_memory_check]
        if self.notifier and self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        if not self.ready_sent:
            deadlines.append(self.started + READY_WAIT_MAX)
        if self.zygote is not None and self.zygote.deadline is not None:
            deadlines.append(self.zygote.deadline)
        for conn in self.conns.values():
            deadlines.append(conn.last_active + CONTROL_IDLE)
        for w in self.workers.values():
            if w.deadline is not None:
                deadlines.append(w.deadline)
            if w.next_run is not None and not self.shutting_down:
                deadlines.append(w.next_run)
            if w.start_at is not None and not self.shutting_down:
                deadlines.append(w.start_at)
            if w.state == RUNNING:
                deadlines.append(w.last_heartbeat + self._hang_after(w))
            if w.channel_closed_at is not None:
                deadlines.append(w.channel_closed_at + CHANNEL_CLOSED_GRACE)
        for waiter in self.waiters:
            deadlines.append(waiter.deadline)
        return min(deadlines)

    def _hang_after(self, w: Worker) -> float:
        return w.spec.heartbeat_interval * w.spec.heartbeat_misses

    def _alive(self) -> bool:
        return any(w.pid is not None for w in self.workers.values())

    # ---- signals ------------------------------------------------------------------------
    def _on_signal(self, key, mask):
        try:
            data = self.sig_r.recv(4096)
        except BlockingIOError:
            return
        for signum in set(data):
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.shutdown("signal %s" % signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                try:
                    self.reload()
                except IpcError:
                    pass  # logged by reload; the running config stays
            # SIGCHLD: _reap runs after every wake-up anyway.

    def shutdown(self, why: str) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("event=stopping reason=%r", why)
        if self.notifier:
            self.notifier.stopping()
        self.cancel.set()
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        for waiter in list(self.waiters):
            self._answer_error(waiter, UNAVAILABLE, "the supervisor is stopping")
        # Reverse start order; one at a time, each within its stop timeout.
        self.stop_order = list(reversed(list(self.workers)))
        for w in self.workers.values():
            if w.state in (BACKOFF, FATAL):
                self._set_state(w, STOPPED)
            elif w.state == EXITED:
                pass
        self._stop_next()

    def _stop_next(self) -> None:
        while self.stop_order:
            w = self.workers[self.stop_order[0]]
            if w.pid is None:
                self.stop_order.pop(0)
                continue
            if w.state != STOPPING:
                w.intent = "stop"
                self._signal_stop(w)
            return

    def reload(self) -> List[str]:
        """SIGHUP or control.reload: re-read waagent.conf; keep the old one if it is unusable."""
        if self.notifier:
            self.notifier.reloading()
        try:
            conf = config.load(self.config_path, report=False)
        except config.ConfigError as e:
            log.error("event=reload result=failed error=%r (keeping the running config)", str(e))
            self._notify_status()
            raise IpcError(FAILED, str(e))
        problems = [str(p) for p in conf.problems]
        for p in problems:
            log.warning("event=config_problem %s", p)
        self.conf = conf
        self.table = table.build(conf)
        now = time.monotonic()
        for name, spec in self.table.items():
            w = self.workers[name]
            old, w.spec = w.spec, spec
            if spec.period != old.period and w.state not in ALIVE:
                w.next_run = now + spec.period if spec.period else None
        self.console.enabled = conf["Logs.Console"]
        self.console.verbose = conf["Logs.Verbose"]
        self._console_echo()
        logging.getLogger().setLevel(logging.DEBUG if conf["Logs.Verbose"] else logging.INFO)
        for lf in self.logfiles.values():
            lf.max_bytes, lf.backups = conf["Agent.LogMaxBytes"], conf["Agent.LogBackups"]
        if bool(conf["Agent.TestHooks"]) != self.test_hooks:
            log.warning("event=reload note='Agent.TestHooks changes at the next start only'")
        if conf["Agent.Spawner"] != self.spawn_method:
            log.warning("event=reload note='Agent.Spawner changes at the next start only'")
        log.info("event=reload result=ok problems=%d", len(problems))
        self._notify_status()
        return problems

    # ---- spawning and ending ------------------------------------------------------------
    def _identity(self, spec) -> Optional[spawn.Identity]:
        if os.geteuid() != 0:
            return None  # a developer's non-root run: no uid switch possible
        try:
            pw = pwd.getpwnam(spec.user)
            gr = grp.getgrnam(spec.group)
        except KeyError as e:
            raise RuntimeError("account missing: %s (run `python -m supervisor.accounts "
                               "install`)" % e.args[0]) from None
        return spawn.Identity(pw.pw_uid, gr.gr_gid)

    @staticmethod
    def _own_dir(path: str, uid: Optional[int], gid: Optional[int], mode: int) -> None:
        """Create path if missing and give it exactly this owner and mode, never through a
        link (a worker could have replaced its own folder with one)."""
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if uid is not None:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def _state_dir(self, spec, identity) -> None:
        """<StateDir>/<worker>/, owned by the worker, 0700."""
        base = self.conf["Agent.StateDir"]
        os.makedirs(base, mode=0o755, exist_ok=True)
        self._own_dir(os.path.join(base, spec.name),
                      identity.uid if identity else None, identity.gid if identity else None,
                      0o700)

    def _platform_dir(self) -> None:
        """<StateDir>/platform/: the transport key and certificate every platform-talking
        worker shares. root:guestagent-wire 2770, so the first such worker creates them (key
        0640) and the others read them; the setgid bit gives new files the group."""
        root = os.geteuid() == 0
        self._own_dir(os.path.join(self.conf["Agent.StateDir"], "platform"),
                      0 if root else None,
                      grp.getgrnam(table.WIRE_GROUP).gr_gid if root else None, 0o2770)

    def spawn(self, w: Worker) -> None:
        spec = w.spec
        now = time.monotonic()
        try:
            identity = self._identity(spec)
            self._state_dir(spec, identity)
            self._platform_dir()
            env = spawn.worker_env(
                spec.name, self.config_path,
                "DEBUG" if self.conf["Logs.Verbose"] else "INFO",
                os.environ.get(spawn.ENV_TEST_DIR) if self.test_hooks else None)
            child = None
            if self.zygote is not None:
                child = self.zygote.spawn(spec.name, spec.module, identity, env)
            method = "zygote" if child is not None else "exec"
            if child is None:
                child = spawn.spawn(spec.module, identity, env, self.python)
        except Exception as e:
            log.error("event=spawn_failed worker=%s error=%r", spec.name, str(e))
            w.last_exit = ("spawn failed: %s" % e)[:200]
            self._set_state(w, STARTING)
            self._failed(w, now)
            return
        w.pid = child.pid
        w.generation += 1
        w.channel = child.channel
        w.decoder = framing.FrameDecoder(framing.WORKER_CAP)
        w.log_fd = child.log_fd
        w.capture = Capture(spec.name, self.logfile(spec.name), self.console)
        w.session = self.policy.session(spec.name)
        w.spawned_at = now
        w.running_since = None
        w.deadline = now + spec.ready_timeout
        w.channel_closed_at = None
        w.kill_reason = None
        w.killed = False
        w.in_flight = 0
        w.message = ""
        if w.spawns and (w.spec.resident or w.state not in (STOPPED, EXITED)):
            w.restarts += 1   # a non-resident worker's next run is not a restart
        w.spawns += 1
        w.start_at = None
        w.proc = ProcStat(child.pid)
        w.proc.cpu_percent()
        self.sel.register(w.channel, selectors.EVENT_READ, self._on_channel)
        self.sel.register(w.log_fd, selectors.EVENT_READ, self._on_log)
        self._set_state(w, STARTING)
        log.info("event=spawn worker=%s pid=%d user=%s restarts=%d method=%s",
                 spec.name, child.pid, spec.user, w.restarts, method)

    def _signal_stop(self, w: Worker) -> None:
        self._set_state(w, STOPPING)
        w.deadline = time.monotonic() + w.spec.stop_timeout
        self._kill(w, w.spec.stop_signal)

    def _kill(self, w: Worker, signum: int) -> None:
        if w.pid is None:
            return
        try:
            os.kill(w.pid, signum)
        except ProcessLookupError:
            pass

    def end(self, w: Worker, reason: str) -> None:
        """End a worker at once (SIGKILL) for a reason; its restart policy decides what next."""
        if w.pid is None or w.killed:
            return
        w.killed = True
        w.kill_reason = reason
        self._kill(w, signal.SIGKILL)
        self._drop_channel(w)

    def violation(self, w: Worker, err: IpcError, what: str = "") -> None:
        log.warning("event=security worker=%s pid=%s code=%s detail=%r action=killed",
                    w.name, w.pid, err.code, (what + err.message)[:300])
        self.end(w, "protocol violation: %s" % err.code)

    def _drop_channel(self, w: Worker) -> None:
        if w.channel is not None:
            try:
                self.sel.unregister(w.channel)
            except (KeyError, ValueError):
                pass
            w.channel.close()
            w.channel = None
        if w.decoder is not None:
            for fd in w.decoder.take_fds():
                os.close(fd)
            w.decoder = None

    def _reap(self) -> None:
        for w in self.workers.values():
            if w.pid is None:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 0
            if pid == 0:
                continue
            self._exited(w, status)
        if self.zygote is not None:
            self.zygote.reap(restart=not self.shutting_down)
            known = {w.pid for w in self.workers.values() if w.pid is not None}
            self.zygote.reap_adopted(known | {self.zygote.pid})

    def _exited(self, w: Worker, status: int) -> None:
        now = time.monotonic()
        # What it said last (a run-once worker's outcome in worker.status) is read first. The
        # pid is reaped: forget it first, so nothing in there can signal a reused pid.
        pid, w.pid, w.proc = w.pid, None, None
        for _ in range(64):
            if w.channel is None or not self._read_channel(w):
                break
        self._drop_channel(w)
        if w.log_fd is not None:
            self._drain_log(w)
            try:
                self.sel.unregister(w.log_fd)
            except (KeyError, ValueError):
                pass
            os.close(w.log_fd)
            w.log_fd = None
            w.capture.close()
        what = spawn.describe_status(status)
        if w.kill_reason:
            what += " (%s)" % w.kill_reason
        w.last_exit = what[:200]
        w.deadline = None
        w.channel_closed_at = None
        was = w.state
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not w.kill_reason
        log.info("event=exit worker=%s pid=%d status=%r state=%s", w.name, pid, what, was)
        intent, w.intent = w.intent, None
        if self.shutting_down or intent == "stop":
            self._answer_waiters(w, error="%s was stopped" % w.name)
            self._set_state(w, STOPPED)
            if self.stop_order and self.stop_order[0] == w.name:
                self.stop_order.pop(0)
            if self.shutting_down:
                self._stop_next()
            return
        if intent == "restart":
            self._set_state(w, STOPPED)
            self.spawn(w)
            return
        if w.spec.restart == table.NEVER or (w.spec.restart == table.ON_FAILURE and clean):
            self._set_state(w, EXITED)
            if clean:
                self._answer_waiters(w, want=EXITED)
            else:
                self._answer_waiters(w, error="%s failed: %s" % (w.name, what))
            if w.spec.lifetime == table.PERIODIC:
                # The next run: one period after this one ended (a run never overlaps).
                w.next_run = now + w.spec.period if w.spec.period else None
                log.log(logging.INFO if clean else logging.WARNING,
                        "event=run_%s worker=%s status=%r next_run_in=%s", "done" if clean
                        else "failed", w.name, what,
                        "%.0fs" % w.spec.period if w.spec.period else "never")
            return
        if was == STARTING:
            self._answer_waiters(w, error="%s exited while starting: %s" % (w.name, what))
        else:
            self._answer_waiters(w, error="%s failed: %s" % (w.name, what), want=EXITED)
        self._failed(w, now)

    def _failed(self, w: Worker, now: float) -> None:
        delay = next_step(w.failures, now, w.spec.backoff)
        if delay is not None and w.spec.lifetime == table.ONCE:
            # A run-once job that failed has done real work (and reported NotReady to the
            # platform): never again at once, whatever the flapping window says.
            delay = max(delay, w.spec.backoff.delay)
        if delay is None:
            self._set_state(w, FATAL)
            retry = w.spec.fatal_retry
            w.deadline = now + retry if retry else None
            log.error("event=fatal worker=%s failures=%d window=%.1fs last_exit=%r "
                      "retry_in=%s (agentctl start %s revives it)",
                      w.name, len(w.failures.times), w.spec.backoff.window, w.last_exit,
                      "%.0fs" % retry if retry else "never", w.name)
            self._answer_waiters(w, error="%s is FATAL: %s" % (w.name, w.last_exit))
            return
        self._set_state(w, BACKOFF)
        w.deadline = now + delay
        log.info("event=backoff worker=%s delay=%.2fs failures=%d", w.name, delay,
                 len(w.failures.times))

    def _set_state(self, w: Worker, new: str) -> None:
        if new == w.state:
            return
        if w.state == EXITED and new == STOPPED:
            pass  # operator stop of an exited worker
        else:
            states.check(w.state, new)
        w.state = new
        if new == RUNNING:
            self._answer_waiters(w)
        elif new == STOPPED:
            self._answer_waiters(w, want=STOPPED)
        self._notify_status()

    # ---- timers ---------------------------------------------------------------------------
    def _tick(self, now: float) -> None:
        for w in self.workers.values():
            if w.state == STARTING and w.pid is not None and not w.killed \
                    and w.deadline is not None and now >= w.deadline:
                self.end(w, "no worker.ready within %.1fs" % w.spec.ready_timeout)
            elif w.state == RUNNING and not w.killed \
                    and now - w.last_heartbeat > self._hang_after(w):
                log.warning("event=hung worker=%s pid=%s silent_for=%.2fs", w.name, w.pid,
                            now - w.last_heartbeat)
                self.end(w, "hung: no heartbeat for %.1fs" % (now - w.last_heartbeat))
            elif w.state == STOPPING and w.deadline is not None and now >= w.deadline \
                    and not w.killed:
                log.warning("event=stop_timeout worker=%s pid=%s timeout=%.1fs action=SIGKILL",
                            w.name, w.pid, w.spec.stop_timeout)
                w.killed = True
                w.kill_reason = w.kill_reason or "did not stop within %.1fs" % w.spec.stop_timeout
                self._kill(w, signal.SIGKILL)
            elif w.state in (BACKOFF, FATAL) and not self.shutting_down \
                    and w.deadline is not None and now >= w.deadline:
                if w.state == FATAL:
                    log.info("event=fatal_retry worker=%s", w.name)
                    w.failures.clear()
                w.deadline = None
                self.spawn(w)
            elif w.state in (STOPPED, EXITED) and not self.shutting_down \
                    and self._due(w, now):
                w.next_run = w.start_at = None
                self.spawn(w)
            if w.channel_closed_at is not None and w.pid is not None and not w.killed \
                    and now - w.channel_closed_at > CHANNEL_CLOSED_GRACE \
                    and w.state != STOPPING:
                self.end(w, "closed its channel")
        if now >= self.next_memory_check:
            self.next_memory_check = now + self.conf["Agent.MemoryCheckPeriod"]
            self._check_memory()
        if self.notifier and self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_interval
        if not self.ready_sent and (
                all(w.state != STARTING and w.start_at is None for w in self.workers.values())
                or now - self.started > READY_WAIT_MAX):
            self.ready_sent = True
            if self.notifier:
                self.notifier.ready(self._summary())
            log.info("event=ready %s", self._summary())
        for waiter in list(self.waiters):
            if now >= waiter.deadline:
                self._answer_error(waiter, TIMEOUT, "%s did not reach %s in time"
                                   % (waiter.worker, waiter.want))
        for conn in list(self.conns.values()):
            if now - conn.last_active > CONTROL_IDLE and not any(
                    wt.conn is conn for wt in self.waiters):
                self._close_conn(conn)

    def _due(self, w: Worker, now: float) -> bool:
        if w.next_run is not None and now >= w.next_run:
            return True
        if w.start_at is None:
            return False
        first = self.workers.get(w.spec.after)
        return now >= w.start_at or first is None or first.state in (EXITED, FATAL, STOPPED)

    def _check_memory(self) -> None:
        for w in self.workers.values():
            limit = w.spec.memory_soft_limit
            if w.state != RUNNING or not limit or w.proc is None or w.killed:
                continue
            rss = w.proc.rss()
            if rss is not None and rss > limit:
                log.warning("event=memory_limit worker=%s pid=%s rss=%d limit=%d action=restart",
                            w.name, w.pid, rss, limit)
                w.kill_reason = "memory soft limit: rss %d > %d" % (rss, limit)
                self._signal_stop(w)   # intent stays None: counted as a failure, restarted

    # ---- worker channels ----------------------------------------------------------------
    def _find(self, fileobj) -> Optional[Worker]:
        for w in self.workers.values():
            if w.channel is fileobj or w.log_fd == fileobj:
                return w
        return None

    def _on_log(self, key, mask):
        w = self._find(key.fileobj)
        if w is None:
            return
        try:
            data = os.read(w.log_fd, 65536)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(w.log_fd)
            return
        w.capture.feed(data)

    def _drain_log(self, w: Worker) -> None:
        for _ in range(64):
            try:
                data = os.read(w.log_fd, 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            w.capture.feed(data)

    def _on_channel(self, key, mask):
        w = self._find(key.fileobj)
        if w is not None and w.channel is not None:
            self._read_channel(w)

    def _read_channel(self, w: Worker) -> bool:
        """Read and dispatch what the worker sent; False when there was nothing to read."""
        try:
            data, fds = recv_some(w.channel)
        except BlockingIOError:
            return False
        except FrameError as e:
            self.violation(w, e)
            return
        except OSError as e:
            data, fds = b"", []
            log.info("event=channel_error worker=%s error=%r", w.name, str(e))
        if not data:
            pending = w.decoder.pending
            self._drop_channel(w)
            if pending:
                self.violation(w, FrameError("channel closed mid-frame"))
            elif w.pid is not None and w.state != STOPPING:
                w.channel_closed_at = time.monotonic()
            return
        try:
            frames = w.decoder.feed(data, fds)
        except FrameError as e:
            self.violation(w, e)
            return
        for obj, frame_fds in frames:
            if w.channel is None:   # ended by an earlier frame of this batch
                for fd in frame_fds:
                    os.close(fd)
                continue
            try:
                msg = envelope.parse(obj)
                verb = w.session.check(msg)
                if len(frame_fds) > verb.max_fds:
                    raise IpcError("BAD_FRAME", "%d descriptors with %s" % (len(frame_fds),
                                                                            verb.name))
            except IpcError as e:
                for fd in frame_fds:
                    os.close(fd)
                if e.code in VIOLATIONS:
                    name = obj.get("verb") or obj.get("notice")
                    self.violation(w, e, "verb=%s " % (str(name)[:64],) if name else "")
                else:
                    self.violation(w, IpcError("BAD_ENVELOPE", e.message))
                return False
            self._dispatch(w, msg, verb, frame_fds)
        return True

    def _dispatch(self, w: Worker, msg, verb, fds) -> None:
        name = verb.name
        now = time.monotonic()
        if name == "worker.hello":
            args = msg.args
            if args["worker"] != w.name or args["pid"] != w.pid:
                self.violation(w, IpcError("DENIED", "hello as %s pid %s" % (
                    args["worker"], args["pid"])))
                return
            w.last_heartbeat = now
            self._send(w, envelope.reply(msg.id, {
                "heartbeat_interval": w.spec.heartbeat_interval}))
            return
        if name == "worker.ready":
            if w.state == STARTING:
                w.running_since = now
                w.last_heartbeat = now
                w.deadline = None
                # A worker that reaches RUNNING has recovered: the failures that led here
                # still count within the window (flapping), nothing more.
                self._set_state(w, RUNNING)
                log.info("event=running worker=%s pid=%s after=%.3fs", w.name, w.pid,
                         now - w.spawned_at)
            return
        if name == "worker.heartbeat":
            w.last_heartbeat = now
            return
        if name == "worker.status":
            w.message = msg.args["message"]
            return
        handler = broker.HANDLERS[name]
        ctx = broker.Context(w.name, self.conf, self.cancel, list(fds))
        log.info("event=verb worker=%s verb=%s id=%d", w.name, name, msg.id)
        if not handler.slow:
            self._reply_result(w, w.generation, msg.id, verb, *self._run(handler, ctx, msg.args))
            return
        if w.in_flight >= MAX_IN_FLIGHT:
            self._send(w, envelope.error(msg.id, BUSY, "too many requests in flight"))
            return
        w.in_flight += 1
        generation = w.generation
        future = self.pool.submit(self._run, handler, ctx, msg.args)

        def done(fut, w=w, generation=generation, ident=msg.id, verb=verb):
            self.done_queue.put((w, generation, ident, verb, fut.result()))
            try:
                self.done_w.send(b"x")
            except OSError:
                pass
        future.add_done_callback(done)

    @staticmethod
    def _run(handler, ctx, args):
        try:
            return handler.fn(ctx, args), None
        except IpcError as e:
            return None, e
        except Exception as e:  # a handler bug: answer INTERNAL, keep the loop alive
            log.exception("event=handler_error verb=%s worker=%s", handler.verb, ctx.worker)
            return None, IpcError(INTERNAL, "%s failed: %s" % (handler.verb, type(e).__name__))
        finally:
            for fd in ctx.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _on_done(self, key, mask):
        try:
            self.done_r.recv(4096)
        except BlockingIOError:
            pass
        while True:
            try:
                w, generation, ident, verb, (result, err) = self.done_queue.get_nowait()
            except queue.Empty:
                return
            if w.generation == generation:
                w.in_flight -= 1
            self._reply_result(w, generation, ident, verb, result, err)

    def _reply_result(self, w, generation, ident, verb, result, err) -> None:
        if w.generation != generation or w.channel is None:
            return  # the process that asked is gone
        if err is None:
            try:
                check_result(verb, result)
            except IpcError as e:
                err = IpcError(INTERNAL, e.message)
        if err is None:
            self.policy.succeeded(verb.name)
            self._send_frame(w, envelope.reply_frame(ident, result, framing.WORKER_CAP))
            if self.console.echo_fd >= 0:
                self._console_echo()
        else:
            self._send(w, envelope.error(ident, err.code, err.message))

    def _send(self, w: Worker, msg: dict) -> None:
        if w.channel is not None:
            self._send_frame(w, framing.encode(msg, framing.WORKER_CAP))

    def _send_frame(self, w: Worker, data: bytes) -> None:
        if w.channel is None:
            return
        try:
            # Replies are small and the worker reads them; a worker that lets its socket
            # buffer fill is treated as hung rather than letting it block the loop.
            sent = w.channel.send(data)
            if sent < len(data):
                self.end(w, "does not read its channel")
        except BlockingIOError:
            self.end(w, "does not read its channel")
        except OSError:
            pass

    # ---- control socket -----------------------------------------------------------------
    def _on_accept(self, key, mask):
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                log.error("event=control_accept error=%r", str(e))
            return
        if len(self.conns) >= control.MAX_CONNECTIONS:
            sock.close()
            return
        sock.setblocking(False)
        try:
            peer = control.peer_of(sock)
        except OSError:
            sock.close()
            return
        conn = ControlConn(sock, peer)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, self._on_control)

    def _on_control(self, key, mask):
        conn = self.conns.get(key.fileobj.fileno())
        if conn is None:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
            if conn.closed:
                return
        if not mask & selectors.EVENT_READ:
            return
        conn.last_active = time.monotonic()
        try:
            data, fds = recv_some(conn.sock)
        except BlockingIOError:
            return
        except (OSError, FrameError):
            self._close_conn(conn)
            return
        for fd in fds:
            os.close(fd)   # no control verb takes descriptors in
        if not data:
            self._close_conn(conn)
            return
        try:
            frames = conn.decoder.feed(data)
        except FrameError as e:
            self._conn_error(conn, 0, e.code, e.message, close=True)
            return
        for obj, _ in frames:
            try:
                msg = envelope.parse(obj)
                if not isinstance(msg, envelope.Request):
                    raise IpcError("BAD_ENVELOPE", "control peers send requests")
                verb = control.authorize(conn.peer, msg.verb, self.admin_gid)
                lookup(verb.name).args.check(msg.args)
            except IpcError as e:
                ident = obj.get("id") if isinstance(obj.get("id"), int) else 0
                if e.code == "DENIED":
                    log.warning("event=control_denied peer=%r verb=%s",
                                conn.peer.describe(), str(obj.get("verb"))[:64])
                self._conn_error(conn, ident, e.code, e.message,
                                 close=e.code in ("BAD_FRAME", "BAD_ENVELOPE"))
                continue
            try:
                self._control(conn, msg)
            except IpcError as e:
                self._conn_error(conn, msg.id, e.code, e.message)

    def _conn_error(self, conn, ident, code, message, close=False):
        self._conn_send(conn, envelope.error(ident if 0 <= ident <= envelope.MAX_ID else 0,
                                             code, message))
        if close:
            conn.close_after_send = True
            self._flush(conn)

    def _conn_send(self, conn: ControlConn, msg: dict, fds=()) -> None:
        if conn.closed:
            for fd in fds:
                os.close(fd)
            return
        conn.out.append((framing.encode(msg, framing.CONTROL_CAP), list(fds)))
        self._flush(conn)

    def _flush(self, conn: ControlConn) -> None:
        while conn.out:
            data, fds = conn.out[0]
            try:
                if fds:
                    sent = socket.send_fds(conn.sock, [data], fds)
                    for fd in fds:
                        os.close(fd)
                    conn.out[0] = (data[sent:], [])
                else:
                    sent = conn.sock.send(data)
                    conn.out[0] = (data[sent:], [])
            except BlockingIOError:
                break
            except OSError:
                self._close_conn(conn)
                return
            if not conn.out[0][0]:
                conn.out.popleft()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if not conn.out and conn.close_after_send:
            self._close_conn(conn)
            return
        try:
            self.sel.modify(conn.sock, events, self._on_control)
        except (KeyError, ValueError):
            pass

    def _close_conn(self, conn: ControlConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.waiters = [wt for wt in self.waiters if wt.conn is not conn]
        self.conns.pop(conn.sock.fileno(), None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        for _, fds in conn.out:
            for fd in fds:
                os.close(fd)
        conn.sock.close()

    def _control(self, conn: ControlConn, msg) -> None:
        verb, args = msg.verb, msg.args
        if verb == "control.version":
            self._conn_send(conn, envelope.reply(msg.id, {
                "version": VERSION, "python": sys.version.split()[0],
                "waagent_version": WAAGENT_VERSION}))
            return
        if verb == "control.reload":
            problems = self.reload()
            self._conn_send(conn, envelope.reply(msg.id, {"problems": [p[:512] for p in
                                                                       problems[:1000]],
                                                          "reloaded": True}))
            return
        if verb == "control.status":
            name = args.get("worker")
            if name is not None and name not in self.workers:
                raise IpcError(NOT_FOUND, "no worker named %s" % name)
            names = [name] if name else list(self.workers)
            self._conn_send(conn, envelope.reply(msg.id, {
                "supervisor": self._supervisor_record(),
                "spawner": self._spawner_record(),
                "workers": [self.record(self.workers[n]) for n in names]}))
            return
        name = "logcollector" if verb == "control.collect_logs" else args["worker"]
        w = self.workers.get(name)
        if w is None:
            raise IpcError(NOT_FOUND, "no worker named %s" % name)
        if verb == "control.logs":
            path = self.logfile(name).path
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self._conn_send(conn, envelope.reply(msg.id, {"path": path}), [fd])
            return
        if self.shutting_down:
            raise IpcError(UNAVAILABLE, "the supervisor is stopping")
        log.info("event=control peer=%r verb=%s worker=%s state=%s",
                 conn.peer.describe(), verb, name, w.state)
        timeout = lookup(verb).timeout - 5
        if verb == "control.collect_logs":
            # A run now (or the one under way), answered when it has exited.
            if w.state == STOPPING:
                raise IpcError(BUSY, "%s is stopping; try again" % name)
            if w.state in STARTABLE:
                w.next_run = None
                self._operator_start(w)
            self._wait(conn, msg.id, w, EXITED, timeout)
            return
        if verb == "control.stop":
            w.next_run = w.start_at = None   # a stopped worker stays stopped: no timer
            if w.state in ALIVE:
                w.intent = "stop"
                if w.state != STOPPING:
                    self._signal_stop(w)
                self._wait(conn, msg.id, w, STOPPED, timeout)
                return
            if w.state in (BACKOFF, FATAL, EXITED):
                w.deadline = None
                self._set_state(w, STOPPED)
            self._conn_send(conn, envelope.reply(msg.id, {"worker": self.record(w)}))
            return
        if verb == "control.start":
            if w.state == RUNNING:
                self._conn_send(conn, envelope.reply(msg.id, {"worker": self.record(w)}))
                return
            if w.state in (STARTING,):
                self._wait(conn, msg.id, w, RUNNING, timeout)
                return
            if w.state == STOPPING:
                raise IpcError(BUSY, "%s is stopping; try again" % name)
            self._operator_start(w)
            self._wait(conn, msg.id, w, RUNNING, timeout)
            return
        if verb == "control.restart":
            if w.state in (RUNNING, STARTING, STOPPING):
                w.intent = "restart"
                w.failures.clear()
                if w.state != STOPPING:
                    self._signal_stop(w)
            else:
                self._operator_start(w)
            self._wait(conn, msg.id, w, RUNNING, timeout)
            return
        raise IpcError(INTERNAL, "no handler for %s" % verb)

    def _operator_start(self, w: Worker) -> None:
        assert w.state in STARTABLE
        w.failures.clear()
        w.deadline = None
        self.spawn(w)

    def _wait(self, conn, ident, w, want, timeout) -> None:
        self.waiters.append(Waiter(conn, ident, w.name, want, time.monotonic() + timeout))

    def _answer_waiters(self, w: Worker, error: Optional[str] = None, want: str = RUNNING):
        for waiter in list(self.waiters):
            if waiter.worker != w.name:
                continue
            if error is not None and waiter.want in (RUNNING, EXITED):
                self._answer_error(waiter, FAILED, error)
            elif error is None and (waiter.want == want or (
                    want == EXITED and waiter.want == RUNNING)):   # done before it said ready
                self.waiters.remove(waiter)
                self._conn_send(waiter.conn, envelope.reply(waiter.ident,
                                                            {"worker": self.record(w)}))

    def _answer_error(self, waiter: Waiter, code: str, message: str) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        self._conn_send(waiter.conn, envelope.error(waiter.ident, code, message))

    # ---- records --------------------------------------------------------------------------
    def record(self, w: Worker) -> dict:
        rss = cpu = None
        if w.proc is not None:
            rss = w.proc.rss()
            cpu = w.proc.cpu_percent()
            cpu = None if cpu is None else round(cpu, 1)
        now = time.monotonic()
        uptime = None
        if w.pid is not None:
            uptime = round(now - w.spawned_at, 3)
        due = w.next_run if w.next_run is not None else w.start_at
        return {
            "name": w.name, "state": w.state, "pid": w.pid, "user": w.spec.user,
            "uptime": uptime, "restarts": w.restarts, "last_exit": w.last_exit,
            "rss": rss, "cpu_percent": cpu, "message": w.message[:200],
            "lifetime": w.spec.lifetime,
            "next_run": None if due is None else round(max(0.0, due - now), 3),
        }

    def _supervisor_record(self) -> dict:
        return {"pid": os.getpid(), "version": VERSION,
                "uptime": round(time.monotonic() - self.started, 3), "rss": self.proc.rss(),
                "config": self.config_path[:4096]}

    def _spawner_record(self) -> dict:
        """The preloaded spawner (Agent.Spawner=zygote), or why workers are fork+exec'd."""
        z = self.zygote
        pid = z.pid if z is not None else None
        if z is None:
            state = "off"
        elif z.disabled:
            state = "fallback"
        elif pid is None:
            state = "restarting"
        else:
            state = "ready" if z.proc.ready else "starting"
        rss = ProcStat(pid).rss() if pid is not None else None
        return {"method": self.spawn_method if z is None or not z.disabled else "exec",
                "state": state, "pid": pid, "starts": z.starts if z is not None else 0,
                "uptime": round(time.monotonic() - z.proc.started, 3) if pid else None,
                "rss": rss, "message": ((z.disabled or "") if z is not None else "")[:300]}

    def _summary(self) -> str:
        counts = collections.Counter(w.state for w in self.workers.values())
        return ", ".join("%d %s" % (n, s.lower()) for s, n in sorted(counts.items()))

    def _notify_status(self) -> None:
        if not self.notifier or not self.notifier.enabled:
            return
        line = self._summary()
        if line != self.last_status_line:
            self.last_status_line = line
            self.notifier.status(line)

    # ---- the end --------------------------------------------------------------------------
    def _close(self) -> None:
        self.cancel.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self.conns.values()):
            self._close_conn(conn)
        path = os.path.join(self.conf["Agent.RuntimeDir"], control.SOCKET_NAME)
        try:
            os.unlink(path)
        except OSError:
            pass
        if self.zygote is not None:
            self.zygote.close()
        log.info("event=stopped")
        for lf in self.logfiles.values():
            lf.close()
