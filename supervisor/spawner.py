"""The supervisor's handle on the preloaded spawner (the process: spawner/, whose docstring
says why a zygote and how it keeps a worker's image clean). Started fork+exec'd before any
worker, it gets `spawner.spawn` orders. When it cannot start, fails an order or dies, it is
given up for fork+exec for the rest of the run, with a log line: it lives only through the boot
anyway, and a root process that misbehaved is not trusted again. Once the boot's workers are
running it is retired (`retire`): a root process that only waits for a crash would hold its
private pages for the life of the VM (issue 17). Loop thread only; never imports `workers/`.
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

READY_TIMEOUT = 30.0     # start-up: the preload's imports on a slow, busy VM


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
    """`sel` is the supervisor's selector (the spawner's log pipe is read in its loop);
    `capture()` makes the Capture for spawner.log."""

    def __init__(self, python: str, env: Dict[str, str], log, sel=None, capture=None):
        self.python, self.env, self.log, self.sel, self.make_capture = \
            python, env, log, sel, capture
        self.child: Optional[launch.Spawned] = None
        self.channel: Optional[Channel] = None
        self.ready = False
        self.started = 0.0
        self.capture = None
        self.disabled: Optional[str] = None   # why we fell back to fork+exec
        self.last_used = 0.0                 # when it was last ready or given an order
        self.retired = False

    @property
    def pid(self) -> Optional[int]:
        return self.child.pid if self.child is not None else None

    def begin(self) -> None:
        """Exec it now, before the supervisor's own imports and set-up (supervisor/daemon.py):
        its preload, seconds under emulation, then runs beside them instead of after them
        (issue 17: no worker forks before it). start() waits for it."""
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

    def start(self) -> None:
        """At start-up, before any worker: wait until it is ready (begin() started it, or
        start it now); else fall back to fork+exec."""
        if self.disabled:
            return
        try:
            launch.set_child_subreaper()
            if self.child is None:
                self._exec()
        except OSError as e:
            return self.fall_back("the spawner did not start: %s" % e)
        self.capture = self.make_capture()
        self.sel.register(self.child.log_fd, 1, self._on_log)   # 1: EVENT_READ
        why = self._wait_ready()
        if why is not None:
            self._kill()
            self.fall_back("the spawner did not start: %s" % why)

    def _wait_ready(self) -> Optional[str]:
        """Read `spawner.ready`; None when it came, else why not."""
        try:
            msg, _ = self.channel.receive(time.monotonic() + READY_TIMEOUT, want_fds=False)
        except IpcError as e:
            return "no spawner.ready: %s" % e.message
        if not isinstance(msg, envelope.Notice) or msg.notice != "spawner.ready" \
                or msg.args.get("pid") != self.pid:
            return "unexpected first message from the spawner"
        self.ready = True
        self.last_used = time.monotonic()
        self.log.info("event=spawner_start pid=%d ready_after=%.3fs",
                      self.pid, time.monotonic() - self.started)
        return None

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
            why = "spawner.spawn for %s: %s %s" % (name, e.code, e.message)
            self._kill()
            self.fall_back(why)
            return None
        finally:
            child_end.close()
            _close(log_w)
        for fd in fds:
            _close(fd)
        parent_end.setblocking(False)
        os.set_blocking(log_r, False)
        return launch.Spawned(result["pid"], parent_end, log_r)

    def reap(self) -> None:
        """After SIGCHLD: has the spawner died? Then fork+exec from now on."""
        if self.child is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return
        self._forget()
        self.fall_back("the spawner (pid %d) exited: %s" % (pid, launch.describe_status(status)))

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
            return self._kill()
        self._forget()

    def _kill(self) -> None:
        """SIGKILL, reap it and forget it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self._forget()

    def _forget(self) -> None:
        child, self.child = self.child, None
        try:   # (its channel is read in start() alone, never registered)
            self.sel.unregister(child.log_fd)
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
