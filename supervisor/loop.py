"""The supervisor's event loop: one thread owns every worker, channel, log pipe and control
connection, and never blocks (DESIGN.md principle 6). Each turn: select() until a descriptor
is ready or the nearest deadline, handle what arrived, reap exited workers by their pids
(never waitpid(-1): broker handlers run subprocesses in their threads), tick every worker.
"""

import collections
import grp
import logging
import os
import pwd
import queue
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import config
import launch
from ipc import envelope, framing, handshake, server
from ipc.channel import recv_some
from ipc.errors import (BUSY, FAILED, INTERNAL, NOT_FOUND, TIMEOUT, UNAVAILABLE,
                        VIOLATIONS, FrameError, IpcError)
from ipc.verbs import REGISTRY, check_result, lookup
from loglines import Capture, LogFile
from supervisor import VERSION, WAAGENT_VERSION, broker, control, pidfile, slices, table, trees
from supervisor.flood import FLOOD, Budget
from supervisor.notify import Notifier
from supervisor.privileged import logs as logs_handlers
from supervisor.privileged import platform as platform_handlers
from supervisor.privileged import verbs
from supervisor.policy import PROVISIONING, Policy
from supervisor.process import Host, WorkerProcess
from supervisor.procstat import ProcStat
from supervisor.states import BACKOFF, EXITED, RUNNING, STARTING, STOPPED

log = logging.getLogger("guestagent.supervisor")

MAX_IN_FLIGHT = 8          # slow requests one worker may have outstanding (more: BUSY)
READY_WAIT_MAX = 30.0      # READY=1 is sent at the latest this long after start
FD_LIMIT = 8192            # the soft RLIMIT_NOFILE the supervisor raises itself to (see unit)


class WorkerIO:
    """The loop's side of one worker process: its channel, log pipe and conversation."""

    def __init__(self, proc: WorkerProcess, child, capture: Capture, session, now: float):
        self.proc = proc
        self.channel: Optional[socket.socket] = child.channel
        self.decoder: Optional[framing.FrameDecoder] = framing.FrameDecoder(framing.WORKER_CAP)
        self.log_fd: Optional[int] = child.log_fd
        self.capture = capture
        self.session = session
        self.stat = ProcStat(child.pid)
        self.budget = Budget(now, proc.spec.heartbeat_interval)
        self.in_flight = 0


class Waiter:
    """A control request answered later: start/restart wait for RUNNING, stop for STOPPED,
    collect-logs for EXITED."""

    def __init__(self, conn: server.Conn, ident: int, worker: str, want: str, deadline: float):
        self.conn, self.ident, self.worker, self.want, self.deadline = \
            conn, ident, worker, want, deadline


class Supervisor(Host):
    def __init__(self, conf, config_path: str, console, python: str = sys.executable,
                 zygote=None):
        self.conf = conf
        self.config_path = config_path
        self.console = console
        self.python = python
        self.started = time.monotonic()
        self.table = table.build(conf)
        self.workers: Dict[str, WorkerProcess] = {
            n: WorkerProcess(s, self) for n, s in self.table.items()}
        self.test_hooks = bool(conf["Agent.TestHooks"])
        self.policy = Policy(test_hooks=self.test_hooks, conf=conf)   # gates from disk
        for verb in self.policy.permits:
            if verb not in self.LIFECYCLE and verb not in verbs.HANDLERS:
                raise RuntimeError("policy grants %s but the broker has no handler" % verb)
        declared = {v for v in REGISTRY if v.startswith("control.")}
        if declared != set(self.CONTROL):
            raise RuntimeError("control verbs without a handler or declaration: %s"
                               % sorted(declared ^ set(self.CONTROL)))
        self.sel = selectors.DefaultSelector()
        self.cancel = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="broker")
        self.done_queue: "queue.Queue" = queue.Queue()
        self.waiters: List[Waiter] = []
        self.control: Optional[server.Server] = None
        self.logfiles: Dict[str, LogFile] = {}
        self.shutting_down = False
        self.stop_order: List[str] = []
        self.ready_sent = False
        self.notifier = Notifier({})   # open() gets systemd's
        self.next_memory_check = time.monotonic()
        self.signalled = True   # a signal came (SIGCHLD among them): look for adopted zombies
        self.next_watchdog = time.monotonic()
        self.last_status_line = ""
        self.admin_gid = control.admin_gid()
        self.stat = ProcStat(os.getpid())
        self.spawn_method = conf["Agent.Spawner"]   # read at start only
        self.zygote = zygote   # spawner.Zygote when Agent.Spawner=zygote
        self.trees = trees.Trees(log)

    # ---- set-up -------------------------------------------------------------------------
    def _console_echo(self) -> None:
        """Echo the log to the system console until provisioning has ended (protocol.md
        §3.6): where a VM owner reads why a VM never came up."""
        want = (self.conf["Logs.Console"] and PROVISIONING not in self.policy.gates.closed
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

    @staticmethod
    def _raise_fd_limit() -> None:
        """Without systemd's LimitNOFILE=: 1024 must not fail a respawn."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT)
        if soft != resource.RLIM_INFINITY and soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                log.info("event=fd_limit soft=%d hard=%s was=%d", want, hard, soft)
            except (OSError, ValueError) as e:
                log.warning("event=fd_limit soft=%d error=%r", soft, str(e))

    def open(self, notifier) -> None:
        self.notifier = notifier
        self._raise_fd_limit()
        self._console_echo()
        # Wake-ups: signals (the C handler writes their numbers) and slow verbs done.
        (self.sig_r, self.sig_w), (self.done_r, self.done_w) = (socket.socketpair(),
                                                                socket.socketpair())
        for sock in (self.sig_r, self.sig_w, self.done_r, self.done_w):
            sock.setblocking(False)
        signal.set_wakeup_fd(self.sig_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda s, f: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.sel.register(self.sig_r, selectors.EVENT_READ, self._on_signal)
        self.sel.register(self.done_r, selectors.EVENT_READ, self._on_done)
        path = os.path.join(self.conf["Agent.RuntimeDir"], control.SOCKET_NAME)
        self.control = server.Server(
            server.bind(path, self.admin_gid), self.sel, log,
            lambda peer, verb: control.authorize(peer, verb, self.admin_gid),
            self._on_control_request)
        # The one supervisor holds the control socket; now its pid goes where waagent's did.
        pidfile.write(self.conf["Pid.File"], os.getpid())
        log.info("event=start pid=%d version=%s config=%s control=%s test_hooks=%s "
                 "spawner=%s", os.getpid(), VERSION, self.config_path, path,
                 "on" if self.test_hooks else "off", self.spawn_method)
        if self.test_hooks:
            log.warning("event=test_hooks Agent.TestHooks=y: debug verbs granted; "
                        "never use this setting in production")
        self.trees.open()
        # The transport key's RSA pair, made in its own child beside the spawner's preload:
        # the provisioning worker asks for it within seconds of its start (issue 17).
        platform_handlers.prepare(self.conf)
        if self.spawn_method == "zygote":   # before any worker has sent us anything
            from supervisor.spawner import Zygote, environment
            if self.zygote is None:        # else daemon.py began it before our imports
                self.zygote = Zygote(self.python, environment(self.config_path,
                                                              self.test_hooks), log)
            self.zygote.attach(self.sel, lambda: Capture("spawner", self.logfile("spawner"),
                                                         self.console))
            self.zygote.start()
        # The WireServer firewall before any worker runs: in place from the start of every
        # boot (OS.EnableFirewall; monitoring re-checks it on its period).
        from supervisor.privileged import firewall
        firewall.at_start(self.conf, self.cancel)
        now = time.monotonic()
        for p in self.workers.values():
            first = self.workers.get(p.spec.after) if p.spec.after else None
            p.schedule(now, first is not None and first.spec.autostart)

    def _test_dir(self) -> Optional[str]:
        return os.environ.get(launch.ENV_TEST_DIR) if self.test_hooks else None

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
            # Until the nearest timer: an idle tree wakes only for heartbeats and memory checks.
            for key, mask in self.sel.select(max(0.0, self._next_deadline() - time.monotonic())):
                try:
                    key.data(key, mask)
                except Exception:  # a bug in one handler must not take the tree down
                    log.exception("event=loop_error handler=%s",
                                  getattr(key.data, "__name__", "?"))
            self._reap()
            self._tick(time.monotonic())
            if self.shutting_down and not any(p.pid for p in self.workers.values()):
                break
        self._close()
        return 0

    def _next_deadline(self) -> float:
        # The memory check rides on other wake-ups (the extensions worker's poll, heartbeats):
        # its own only when none came for a further period (issue 17's idle CPU).
        deadlines = [self.next_memory_check + self.conf["Agent.MemoryCheckPeriod"],
                     self.control.next_deadline()]
        if self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        if not self.ready_sent:
            deadlines.append(self.started + READY_WAIT_MAX)
        if self.zygote is not None:
            deadlines.append(self.zygote.retire_at(self.conf["Agent.SpawnerRetireAfter"]))
        deadlines += [p.next_deadline() for p in self.workers.values()]
        deadlines += [waiter.deadline for waiter in self.waiters]
        return min(d for d in deadlines if d is not None)

    def _tick(self, now: float) -> None:
        for p in self.workers.values():
            p.tick(now)
        self.control.tick(now)
        if self._spawner_idle(now):
            self.zygote.retire()
        if now >= self.next_memory_check:
            self.next_memory_check = now + self.conf["Agent.MemoryCheckPeriod"]
            self.signalled = True   # a backstop: adopted zombies looked for at least this often
            for p in self.workers.values():
                rss = p.io.stat.rss() if p.pid is not None else None
                p.over_memory(rss or 0)
        # WATCHDOG=1 on any wake-up half an interval after the last (a wake-up of its own
        # only at the interval, WatchdogSec/2, as before).
        if self.notifier.watchdog_interval and \
                now >= self.next_watchdog - self.notifier.watchdog_interval / 2:
            self.notifier.send("WATCHDOG=1")
            self.next_watchdog = now + self.notifier.watchdog_interval
        if not self.ready_sent and (
                all(p.state != STARTING and p.start_at is None for p in self.workers.values())
                or now - self.started > READY_WAIT_MAX):
            self.ready_sent = True
            self.notifier.status(self._summary(), "READY=1")
            log.info("event=ready %s", self._summary())
        self.waiters = [wt for wt in self.waiters if not wt.conn.closed]
        for waiter in list(self.waiters):
            if now >= waiter.deadline:
                self._answer(waiter, error=(TIMEOUT, "%s did not reach %s in time"
                                            % (waiter.worker, waiter.want)))

    def _spawner_idle(self, now: float) -> bool:
        """Retire the spawner? It has started nothing for Agent.SpawnerRetireAfter seconds
        and no worker it would start is starting or waits to (a resident worker waiting for
        provisioning, a restart in backoff)."""
        at = self.zygote and self.zygote.retire_at(self.conf["Agent.SpawnerRetireAfter"])
        if at is None or now < at:
            return False
        return all(p.state not in (STARTING, BACKOFF) and p.start_at is None
                   and p.next_run is None
                   for p in self.workers.values() if not slices.limited(p.spec))

    # ---- signals, stopping, reloading ---------------------------------------------------
    def _on_signal(self, key, mask):
        try:
            data = self.sig_r.recv(4096)
        except BlockingIOError:
            return
        self.signalled = True      # any signal, in case a full pipe dropped SIGCHLD's byte
        for signum in set(data):   # (SIGCHLD: _reap runs after every wake-up anyway)
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.shutdown("signal %s" % signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                try:
                    self.reload()
                except IpcError:
                    pass  # logged by reload; the running config stays

    def shutdown(self, why: str) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("event=stopping reason=%r", why)
        self.notifier.send("STOPPING=1")
        self.cancel.set()
        self.control.stop_listening()
        for waiter in list(self.waiters):
            self._answer(waiter, error=(UNAVAILABLE, "the supervisor is stopping"))
        for p in self.workers.values():
            p.hold()
        # Reverse start order; one at a time, each within its stop timeout.
        self.stop_order = list(reversed(list(self.workers)))
        self._stop_next()

    def _stop_next(self) -> None:
        while self.stop_order:
            if self.workers[self.stop_order[0]].stop_for_shutdown():
                return
            self.stop_order.pop(0)

    def reload(self) -> List[str]:
        """SIGHUP or control.reload: re-read waagent.conf; keep the old one if it is unusable."""
        self.notifier.send("RELOADING=1")
        try:
            conf = config.load(self.config_path, report=False)
        except config.ConfigError as e:
            log.error("event=reload result=failed error=%r (keeping the running config)", str(e))
            self.changed()
            raise IpcError(FAILED, str(e))
        problems = [str(p) for p in conf.problems]
        for p in problems:
            log.warning("event=config_problem %s", p)
        self.conf = conf
        self.table = table.build(conf)
        for name, spec in self.table.items():
            self.workers[name].reconfigure(spec, time.monotonic())
        self.console.enabled = conf["Logs.Console"]
        self.console.verbose = conf["Logs.Verbose"]
        self._console_echo()
        logging.getLogger().setLevel(logging.DEBUG if conf["Logs.Verbose"] else logging.INFO)
        for lf in self.logfiles.values():
            lf.max_bytes, lf.backups = conf["Agent.LogMaxBytes"], conf["Agent.LogBackups"]
        for key, was in (("Agent.TestHooks", self.test_hooks),
                         ("Agent.Spawner", self.spawn_method)):
            if conf[key] != was:
                log.warning("event=reload note='%s changes at the next start only'", key)
        log.info("event=reload result=ok problems=%d", len(problems))
        self.changed()
        return problems

    # ---- the Host seam (supervisor/process.py): the OS calls of the state machine -------
    def now(self) -> float:
        return time.monotonic()

    def _identity(self, spec) -> Optional[launch.Identity]:
        if os.geteuid() != 0:
            return None  # a developer's non-root run: no uid switch possible
        try:
            pw = pwd.getpwnam(spec.user)
            gr = grp.getgrnam(spec.group)
        except KeyError as e:
            raise RuntimeError("account missing: %s (run `python -m cli.accounts "
                               "install`)" % e.args[0]) from None
        return launch.Identity(pw.pw_uid, gr.gr_gid)

    def _state_dir(self, spec, identity) -> None:
        """<StateDir>/<worker>/, the worker's own, 0700, never through a link (a worker
        could have replaced its own folder with one)."""
        os.makedirs(self.conf["Agent.StateDir"], mode=0o755, exist_ok=True)
        path = os.path.join(self.conf["Agent.StateDir"], spec.name)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if identity is not None:
                os.fchown(fd, identity.uid, identity.gid)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def spawn(self, proc: WorkerProcess) -> int:
        """The one place a worker process is started."""
        spec = proc.spec
        identity = self._identity(spec)
        self._state_dir(spec, identity)
        platform_handlers.prepare(self.conf)   # the transport key's root-only folder
        env = launch.worker_env(spec.name, self.config_path,
                                "DEBUG" if self.conf["Logs.Verbose"] else "INFO", self._test_dir())
        cgroup = self.trees.prepare(spec.name, identity and identity.uid)
        child, method = None, "exec"
        if slices.limited(spec) and identity is not None:
            # Its own CPU and memory limits, fork+exec'd (supervisor/slices.py).
            method = "scope" if slices.under_systemd() else "cgroup"
            if method == "scope":
                child = launch.spawn(spec.module, None, env, self.python, cgroup,
                                     slices.scope_wrapper(spec, self.conf, identity,
                                                          self.python))
            else:
                child = launch.spawn(spec.module, identity, env, self.python,
                                     (cgroup,) * (cgroup is not None) +
                                     slices.cgroups(spec, self.conf, cgroup))
        if child is None and self.zygote is not None:
            child = self.zygote.spawn(spec.name, spec.module, identity, env, cgroup)
            method = "zygote" if child is not None else "exec"
        if child is None:
            child = launch.spawn(spec.module, identity, env, self.python, cgroup)
        self.trees.started(spec.name, child.pid)
        io = proc.io = WorkerIO(proc, child, Capture(spec.name, self.logfile(spec.name),
                                                     self.console),
                                self.policy.session(spec.name), time.monotonic())
        io.stat.cpu_percent()   # the first call sets the base
        self.sel.register(io.channel, selectors.EVENT_READ,
                          lambda key, mask: io.channel is not None and self._read_channel(io))
        self.sel.register(io.log_fd, selectors.EVENT_READ, lambda key, mask: self._on_log(io))
        log.info("event=spawn worker=%s pid=%d user=%s restarts=%d method=%s",
                 spec.name, child.pid, spec.user, proc.restarts, method)
        return child.pid

    def kill(self, proc: WorkerProcess, signum: int) -> None:
        """The one place a signal is sent to a worker (its tree: trees.py)."""
        self.trees.signal(proc.name, proc.pid, signum)

    def drop_channel(self, proc: WorkerProcess) -> None:
        io = proc.io
        if io is None:
            return
        if io.channel is not None:
            self.sel.unregister(io.channel)
            io.channel.close()
            io.channel = None
        if io.decoder is not None:
            for fd in io.decoder.take_fds():
                os.close(fd)
            io.decoder = None

    def drain(self, proc: WorkerProcess) -> None:
        io = proc.io
        for _ in range(64):
            if io.channel is None or not self._read_channel(io):
                break
        self.drop_channel(proc)
        if io.log_fd is not None:
            io.capture.pump(io.log_fd, reads=64)
            if io.log_fd in self.sel.get_map():
                self.sel.unregister(io.log_fd)
            os.close(io.log_fd)
            io.log_fd = None
            io.capture.close()

    def settled(self, proc: WorkerProcess, reached: Optional[str] = None,
                error: Optional[str] = None) -> None:
        for waiter in [wt for wt in self.waiters if wt.worker == proc.name]:
            if error is not None:
                if waiter.want in (RUNNING, EXITED):
                    self._answer(waiter, error=(FAILED, error))
            elif waiter.want == reached or (reached == EXITED and waiter.want == RUNNING):
                self._answer(waiter, {"worker": self.record(proc)})   # (as far as it goes)

    def state_of(self, name: str) -> Optional[str]:
        p = self.workers.get(name)
        return None if p is None else p.state

    def _reap(self) -> None:
        for p in self.workers.values():
            if p.pid is None:
                continue
            try:
                pid, status = os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = p.pid, 0
            if pid == 0:
                continue
            self.trees.ended(p.name, p.pid)   # nothing the worker started outlives it
            p.exited(launch.describe_status(status),
                     os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
            if self.shutting_down:
                self._stop_next()
        if self.zygote is not None:
            self.zygote.reap()
        if not self.signalled:   # no SIGCHLD: no zombie; spare the /proc reads of every wake
            return
        self.signalled = False
        self.trees.reap_adopted({p.pid for p in self.workers.values() if p.pid is not None}
                                | {self.zygote and self.zygote.pid})

    # ---- worker channels: read, check, run, reply -------------------------------------------
    def _on_log(self, io: WorkerIO):
        if io.log_fd is not None and not io.capture.pump(io.log_fd):
            self.sel.unregister(io.log_fd)

    def violation(self, proc: WorkerProcess, err: IpcError, what: str = "") -> None:
        log.warning("event=security worker=%s pid=%s code=%s detail=%r action=killed",
                    proc.name, proc.pid, err.code, (what + err.message)[:300])
        proc.end("protocol violation: %s" % err.code)

    def _read_channel(self, io: WorkerIO) -> bool:
        """Read and check what the worker sent, run each message; False when there was
        nothing to read (or the worker was ended for it)."""
        proc = io.proc
        try:
            data, fds = recv_some(io.channel)
        except BlockingIOError:
            return False
        except FrameError as e:
            self.violation(proc, e)
            return False
        except OSError as e:
            data, fds = b"", []
            log.info("event=channel_error worker=%s error=%r", proc.name, str(e))
        if not data:
            pending = io.decoder.pending
            self.drop_channel(proc)
            if pending:
                self.violation(proc, FrameError("channel closed mid-frame"))
            else:
                proc.channel_closed()
            return False
        try:
            frames = io.decoder.feed(data, fds)
        except FrameError as e:
            self.violation(proc, e)
            return False
        now = time.monotonic()
        for obj, frame_fds in frames:
            if io.channel is None:   # ended by an earlier frame of this batch
                for fd in frame_fds:
                    os.close(fd)
                continue
            try:
                if not io.budget.spend(now):
                    raise IpcError(FLOOD, "more than %.0f messages a second" % io.budget.rate)
                msg = envelope.parse(obj)
                verb = io.session.check(msg)
                if len(frame_fds) > verb.max_fds:
                    raise IpcError("BAD_FRAME", "%d descriptors with %s" % (len(frame_fds),
                                                                            verb.name))
            except IpcError as e:
                for fd in frame_fds:
                    os.close(fd)
                name = obj.get("verb") or obj.get("notice")
                if e.code not in VIOLATIONS and e.code != FLOOD:
                    e = IpcError("BAD_ENVELOPE", e.message)
                self.violation(proc, e, "verb=%s " % (str(name)[:64],) if name else "")
                return False
            self._dispatch(io, msg, verb, frame_fds)
        return True

    # The lifecycle verbs every worker speaks (ipc/verbs/worker.py), handled here.
    def _hello(self, io: WorkerIO, msg) -> None:
        """The one place worker.hello is answered: it must say who the channel says it is."""
        proc = io.proc
        mismatch = handshake.hello_mismatch(msg.args, proc.name, proc.pid)
        if mismatch:
            self.violation(proc, IpcError("DENIED", mismatch))
            return
        proc.heartbeat()
        self._send(io, envelope.reply(msg.id, {
            "heartbeat_interval": proc.spec.heartbeat_interval}))

    LIFECYCLE = {
        "worker.hello": _hello,
        "worker.ready": lambda self, io, msg: io.proc.ready(),
        "worker.heartbeat": lambda self, io, msg: io.proc.heartbeat(),
        "worker.status": lambda self, io, msg: io.proc.status(msg.args["message"]),
    }

    def _dispatch(self, io: WorkerIO, msg, verb, fds) -> None:
        """Run one admitted message: a lifecycle verb here, a privileged one by the broker
        (inline when fast, in the pool when slow)."""
        lifecycle = self.LIFECYCLE.get(verb.name)
        if lifecycle is not None:
            lifecycle(self, io, msg)
            return
        handler = verbs.HANDLERS[verb.name]
        io.proc.heartbeat()   # an admitted call shows the worker alive as well as a beat does
        # An idle agent writes no log line per poll (issue 13's idle CPU); a flood of a
        # routine verb is still a violation (the Budget), and logged as one.
        log.log(logging.DEBUG if handler.routine else logging.INFO,
                "event=verb worker=%s verb=%s id=%d", io.proc.name, verb.name, msg.id)
        if handler.slow and io.in_flight >= MAX_IN_FLIGHT:
            for fd in fds:
                os.close(fd)
            self._send(io, envelope.error(msg.id, BUSY, "too many requests in flight"))
            return
        ctx = broker.Context(io.proc.name, self.conf, self.cancel, list(fds))
        if not handler.slow:
            self._reply_result(io, msg.id, verb, *self._run(handler, ctx, msg.args),
                               fds=ctx.reply_fds)
            return
        io.in_flight += 1

        def done(fut, io=io, ident=msg.id, verb=verb, ctx=ctx):
            self.done_queue.put((io, ident, verb, fut.result(), ctx.reply_fds))
            try:
                self.done_w.send(b"x")
            except OSError:
                pass
        self.pool.submit(self._run, handler, ctx, msg.args).add_done_callback(done)

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
                io, ident, verb, (result, err), fds = self.done_queue.get_nowait()
            except queue.Empty:
                # Slow verbs are the rare heavy ones (provisioning, packages, commands):
                # their buffers are freed by now; hand the pages back rather than keep them.
                launch.release_free_memory()
                return
            io.in_flight -= 1
            self._reply_result(io, ident, verb, result, err, fds)

    def _reply_result(self, io: WorkerIO, ident, verb, result, err, fds=()) -> None:
        try:
            if io.channel is None:
                return  # the process that asked is gone
            if err is None:
                try:
                    check_result(verb, result)
                except IpcError as e:
                    err = IpcError(INTERNAL, e.message)
            if err is not None:
                return self._send(io, envelope.error(ident, err.code, err.message))
            self.policy.succeeded(verb.name)
            self._send_frame(io, envelope.reply_frame(ident, result, framing.WORKER_CAP), fds)
            if self.console.echo_fd >= 0:
                self._console_echo()
        finally:
            for fd in fds:   # sent (the worker has its own copy) or not: ours are closed
                os.close(fd)

    def _send(self, io: WorkerIO, msg: dict) -> None:
        self._send_frame(io, framing.encode(msg, framing.WORKER_CAP))

    def _send_frame(self, io: WorkerIO, data: bytes, fds=()) -> None:
        if io.channel is None:
            return
        try:
            # Replies are small and the worker reads them; a worker that lets its socket
            # buffer fill is treated as hung rather than letting it block the loop.
            sent = socket.send_fds(io.channel, [data], list(fds)) if fds else \
                io.channel.send(data)
            if sent < len(data):
                io.proc.end("does not read its channel")
        except BlockingIOError:
            io.proc.end("does not read its channel")
        except OSError:
            pass

    # ---- control verbs (ipc/verbs/control.py; who may call which: control.py) ----------
    # A handler returns the result to reply with now, or None when it has answered itself
    # or a Waiter will (the worker reaching a state).
    def _on_control_request(self, conn: server.Conn, msg) -> None:
        result = self.CONTROL[msg.verb](self, conn, msg)   # all there: checked at start
        if result is not None:
            self.control.send(conn, envelope.reply(msg.id, result))

    def _c_version(self, conn, msg):
        return {"version": VERSION, "python": sys.version.split()[0],
                "waagent_version": WAAGENT_VERSION}

    def _c_reload(self, conn, msg):
        problems = self.reload()
        return {"problems": [p[:512] for p in problems[:1000]], "reloaded": True}

    def _c_status(self, conn, msg):
        name = msg.args.get("worker")
        names = [self._worker(name).name] if name is not None else list(self.workers)
        return {"supervisor": self._supervisor_record(), "spawner": self._spawner_record(),
                "workers": [self.record(self.workers[n]) for n in names]}

    def _c_logs(self, conn, msg):
        path = self.logfile(self._worker(msg.args["worker"]).name).path
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.control.send(conn, envelope.reply(msg.id, {"path": path}), [fd])

    def _c_worker(self, conn, msg):
        """control.start / stop / restart: answered now if it is there already, else when it
        gets there."""
        p = self._operate(conn, msg, msg.args["worker"])
        act, want = {"control.start": (p.start, RUNNING), "control.stop": (p.stop, STOPPED),
                     "control.restart": (p.restart, RUNNING)}[msg.verb]
        return self._wait(conn, msg, p, want) if act() else {"worker": self.record(p)}

    def _c_collect_logs(self, conn, msg):
        p = self._operate(conn, msg, "logcollector")
        logs_handlers.full_next(msg.args.get("full", False))
        p.run_now()
        return self._wait(conn, msg, p, EXITED)

    CONTROL = {
        "control.version": _c_version,
        "control.reload": _c_reload,
        "control.status": _c_status,
        "control.logs": _c_logs,
        "control.start": _c_worker,
        "control.stop": _c_worker,
        "control.restart": _c_worker,
        "control.collect_logs": _c_collect_logs,
    }

    def _worker(self, name: str) -> WorkerProcess:
        p = self.workers.get(name)
        if p is None:
            raise IpcError(NOT_FOUND, "no worker named %s" % name)
        return p

    def _operate(self, conn, msg, name: str) -> WorkerProcess:
        """The worker an operator's verb acts on (logged), unless the supervisor is stopping."""
        p = self._worker(name)
        if self.shutting_down:
            raise IpcError(UNAVAILABLE, "the supervisor is stopping")
        log.info("event=control peer=%r verb=%s worker=%s state=%s",
                 conn.peer.describe(), msg.verb, name, p.state)
        return p

    def _wait(self, conn, msg, p: WorkerProcess, want: str) -> None:
        timeout = lookup(msg.verb).timeout - 5
        self.waiters.append(Waiter(conn, msg.id, p.name, want, time.monotonic() + timeout))
        conn.waiting += 1

    def _answer(self, waiter: Waiter, result: Optional[dict] = None, error=None) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            waiter.conn.waiting -= 1
        if error is not None:
            self.control.send(waiter.conn, envelope.error(waiter.ident, *error))
        else:
            self.control.send(waiter.conn, envelope.reply(waiter.ident, result))

    # ---- records --------------------------------------------------------------------------
    def record(self, p: WorkerProcess) -> dict:
        rss = cpu = None
        if p.pid is not None:
            rss, cpu = p.io.stat.rss(), p.io.stat.cpu_percent()
        return p.record(time.monotonic(), rss, cpu)

    def _supervisor_record(self) -> dict:
        return {"pid": os.getpid(), "version": VERSION,
                "uptime": round(time.monotonic() - self.started, 3), "rss": self.stat.rss(),
                "config": self.config_path[:4096]}

    def _spawner_record(self) -> dict:
        """The preloaded spawner (Agent.Spawner=zygote), or why workers are fork+exec'd."""
        z = self.zygote
        if z is None:
            return {"method": self.spawn_method, "state": "off", "pid": None, "starts": 0,
                    "uptime": None, "rss": None, "message": ""}
        pid = z.pid
        state = "retired" if z.retired else "fallback" if z.disabled else "ready"
        return {"method": "exec" if z.disabled else self.spawn_method, "state": state,
                "pid": pid, "starts": int(z.ready),   # one start, never again
                "uptime": round(time.monotonic() - z.started, 3) if pid else None,
                "rss": ProcStat(pid).rss() if pid else None, "message": (z.disabled or "")[:300]}

    def _summary(self) -> str:
        counts = collections.Counter(p.state for p in self.workers.values())
        return ", ".join("%d %s" % (n, s.lower()) for s, n in sorted(counts.items()))

    def changed(self, proc: Optional[WorkerProcess] = None) -> None:
        """The service status line (the Host seam's `changed`, and after a reload)."""
        if not self.notifier.enabled:
            return
        line = self._summary()
        if line != self.last_status_line:
            self.last_status_line = line
            self.notifier.status(line)

    # ---- the end --------------------------------------------------------------------------
    def _close(self) -> None:
        self.cancel.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.control.close_all()
        try:
            os.unlink(os.path.join(self.conf["Agent.RuntimeDir"], control.SOCKET_NAME))
        except OSError:
            pass
        if self.zygote is not None:
            self.zygote.close()
        self.trees.close()
        pidfile.remove(self.conf["Pid.File"], os.getpid())
        log.info("event=stopped")
        for lf in self.logfiles.values():
            lf.close()
