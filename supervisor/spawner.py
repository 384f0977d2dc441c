"""The supervisor's handle on the preloaded spawner (the process: spawner/, whose docstring
says why a zygote and how it keeps a worker's image clean). Started fork+exec'd before any
worker, it gets `spawner.spawn` orders; it is restarted when it dies, and given up for
fork+exec for good (with a log line) when it cannot start or dies too often. Once the boot's
workers are running it is retired (`retire`): a root process that only waits for a crash
would hold its private pages for the life of the VM (issue 17). Loop thread only; never
imports `workers/`.
"""

import os
import signal
import socket
import time
from typing import Dict, Optional

import launch
from ipc import envelope
from ipc.channel import Channel
from ipc.errors import IpcError
from ipc.verbs.spawner import SPAWN

READY_TIMEOUT = 30.0     # start-up: imports of requests + cryptography on a slow, busy VM
ATTEMPTS = 3             # tries at start-up before falling back to fork+exec
MAX_DEATHS = 5           # deaths within DEATH_WINDOW before falling back
DEATH_WINDOW = 300.0


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def environment(config_path: str, test_hooks: bool) -> Dict[str, str]:
    """The spawner's own environment: a worker's, less what names a worker."""
    env = launch.worker_env("spawner", config_path, "INFO",
                            os.environ.get(launch.ENV_TEST_DIR) if test_hooks else None)
    return {k: v for k, v in env.items() if k in ("PATH", "LANG", "HOME", launch.ENV_TEST_DIR)}


class Zygote:
    """`sel` is the supervisor's selector (the spawner's log pipe and, after a restart, its
    `spawner.ready` are read in its loop); `capture()` makes the Capture for spawner.log."""

    def __init__(self, python: str, env: Dict[str, str], log, sel=None, capture=None):
        self.python, self.env, self.log, self.sel, self.make_capture = \
            python, env, log, sel, capture
        self.child: Optional[launch.Spawned] = None
        self.channel: Optional[Channel] = None
        self.ready = False
        self.started = 0.0
        self.capture = None
        self.disabled: Optional[str] = None   # why we fell back to fork+exec
        self.deaths = []
        self.starts = 0
        self.last_used = 0.0                 # when it was last ready or given an order
        self.retired = False

    @property
    def pid(self) -> Optional[int]:
        return self.child.pid if self.child is not None else None

    @property
    def deadline(self) -> Optional[float]:
        """When reap() must look again: a restarted spawner's READY_TIMEOUT."""
        return None if self.child is None or self.ready else self.started + READY_TIMEOUT

    def begin(self) -> None:
        """Exec it now, before the supervisor's own imports and set-up (supervisor/daemon.py):
        its preload, seconds under emulation, then runs beside them instead of after them
        (issue 17: no worker forks before it). start() waits for it, or starts it again."""
        try:   # (the subreaper bit, which its workers need, is start()'s)
            self._exec()
        except OSError:
            self.child = None   # start() tries again, and says why

    def attach(self, sel, capture) -> None:
        """The supervisor's selector and spawner.log, once they exist."""
        self.sel, self.make_capture = sel, capture

    def _exec(self) -> None:
        self.child = launch.spawn("spawner", None, self.env, self.python)
        self.child.channel.setblocking(True)
        self.channel, self.ready, self.started = Channel(self.child.channel), False, \
            time.monotonic()

    def start(self, wait: bool = True) -> None:
        """wait=True (start-up, before any worker): block until it is ready, ATTEMPTS times;
        the first is the one begin() started, if it did. wait=False (a restart): the loop
        must not wait for a fresh interpreter's imports, so it reads `spawner.ready` itself;
        spawns until then are fork+exec."""
        if self.disabled:
            return
        try:
            launch.set_child_subreaper()
        except OSError as e:
            return self.fall_back("cannot become a child subreaper: %s" % e)
        last = ""
        for _ in range(ATTEMPTS if wait else 1):
            if self.child is None:
                try:
                    self._exec()
                except OSError as e:
                    last = "spawn failed: %s" % e
                    continue
            self.capture = self.make_capture()
            self.sel.register(self.child.log_fd, 1, self._on_log)   # 1: EVENT_READ
            if not wait:
                self.sel.register(self.child.channel, 1, self._on_ready)
                return
            why = self._wait_ready(READY_TIMEOUT)
            if why is None:
                return
            last = why
            self._kill(wait=True)
        self.fall_back("the spawner did not start (%d attempt(s)): %s"
                       % (ATTEMPTS if wait else 1, last))

    def _wait_ready(self, timeout: float) -> Optional[str]:
        """Read `spawner.ready`; None when it came, else why not."""
        try:
            msg, _ = self.channel.receive(time.monotonic() + timeout, want_fds=False)
        except IpcError as e:
            return "no spawner.ready: %s" % e.message
        if not isinstance(msg, envelope.Notice) or msg.notice != "spawner.ready" \
                or msg.args.get("pid") != self.pid:
            return "unexpected first message from the spawner"
        self.ready = True
        self.last_used = time.monotonic()
        self.starts += 1
        self.log.info("event=spawner_start pid=%d starts=%d ready_after=%.3fs",
                      self.pid, self.starts, time.monotonic() - self.started)
        return None

    def _on_ready(self, key, mask) -> None:
        self.sel.unregister(key.fileobj)
        if self.child is not None and self.child.channel is key.fileobj:
            why = self._wait_ready(1.0)
            if why is not None:
                self.log.error("event=spawner_failed pid=%d error=%r", self.pid, why)
                self._kill()   # reap() counts it and starts another

    def fall_back(self, why: str) -> None:
        self.disabled = why
        self.log.error("event=spawner_fallback method=exec reason=%r", why[:300])

    def spawn(self, name: str, module: str, identity, env: Dict[str, str],
              cgroup: Optional[str] = None) -> Optional[launch.Spawned]:
        """A worker forked by the spawner, or None: the caller uses fork+exec this time."""
        if self.child is None or not self.ready:
            return None
        self.last_used = time.monotonic()
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_r, log_w = os.pipe()
        try:
            result, fds = self.channel.call("spawner.spawn", {
                "worker": name, "module": module,
                "uid": None if identity is None else identity.uid,
                "gid": None if identity is None else identity.gid,
                "env": env, "cgroup": cgroup},
                timeout=SPAWN.timeout, fds=[child_end.fileno(), log_w])
        except BaseException as e:
            parent_end.close()
            _close(log_r)
            if not isinstance(e, IpcError):
                raise
            self.log.error("event=spawner_failed pid=%d worker=%s error=%r action=restart",
                           self.pid, name, ("spawner.spawn: %s %s" % (e.code, e.message))[:300])
            self._kill()   # reap() counts it and starts another
            return None
        finally:
            child_end.close()
            _close(log_w)
        for fd in fds:
            _close(fd)
        parent_end.setblocking(False)
        os.set_blocking(log_r, False)
        return launch.Spawned(result["pid"], parent_end, log_r)

    def reap(self, restart: bool) -> None:
        """After SIGCHLD: has the spawner died? Log it and start another."""
        if self.child is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            if not self.ready and time.monotonic() - self.started > READY_TIMEOUT:
                self.log.error("event=spawner_failed pid=%d error='no spawner.ready in %.0fs'"
                               % (self.pid, READY_TIMEOUT))
                self._kill()
            return
        self.log.warning("event=spawner_exit pid=%d status=%r", pid,
                         launch.describe_status(status))
        self._forget()
        if not restart:
            return
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < DEATH_WINDOW] + [now]
        if len(self.deaths) > MAX_DEATHS:
            return self.fall_back("died %d times within %.0fs" % (len(self.deaths), DEATH_WINDOW))
        self.start(wait=False)

    def retire_at(self, after: float) -> Optional[float]:
        """When it may retire (the loop also asks whether a worker waits to start): `after`
        seconds after it was last ready or given an order; None while it is not running
        ready, or when `after` is 0 (Agent.SpawnerRetireAfter: it stays)."""
        if not after or not self.ready or self.child is None:
            return None
        return self.last_used + after

    def retire(self) -> None:
        """It has had nothing to start for a while and no worker waits to start (the loop
        decides): it leaves, and from now on workers are fork+exec'd — the rare restart of a
        resident worker costs an interpreter's start instead of a fork."""
        self.log.info("event=spawner_retired pid=%d idle=%.0fs", self.pid,
                      time.monotonic() - self.last_used)
        self.retired, self.disabled = True, "retired: the boot's workers are running"
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """At the supervisor's end: EOF on its channel tells it to leave; SIGKILL if not."""
        if self.child is None:
            return
        self.channel.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.01)
        else:
            return self._kill(wait=True)
        self._forget()

    def _kill(self, wait: bool = False) -> None:
        """SIGKILL; with wait, reap it and forget it (else reap() will)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if wait:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self._forget()

    def _forget(self) -> None:
        child, self.child = self.child, None
        for fileobj in (child.channel, child.log_fd):
            try:
                self.sel.unregister(fileobj)
            except (KeyError, ValueError):
                pass
        self.channel.close()
        if self.capture is not None:
            # What it wrote last (a traceback) still goes to spawner.log.
            self.capture.pump(child.log_fd, reads=64)
            self.capture.close()
            self.capture = None
        _close(child.log_fd)

    def _on_log(self, key, mask) -> None:
        if not self.capture.pump(key.fd):
            self.sel.unregister(key.fd)
