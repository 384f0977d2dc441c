"""The supervisor's handle on the preloaded spawner (the spawner itself: spawner/, run as
`python -I -m spawner`; why a zygote and how it keeps a worker's image clean: its
package's docstring). Here: start it fork+exec'd before any worker, wait for
`spawner.ready`, give it `spawner.spawn` orders, restart it when it dies, and fall back to
fork+exec for good (with a log line) when it cannot be started or dies too often.
`Agent.Spawner=exec` skips it altogether. This module never imports `workers/`.
"""

import os
import signal
import socket
import time
from typing import Dict, Optional

from ipc import envelope
from ipc.channel import Channel
from ipc.errors import IpcError
from ipc.verbs.spawner import SPAWN
import launch

READY_TIMEOUT = 30.0     # start-up: imports of requests + cryptography on a slow, busy VM
ORDER_TIMEOUT = SPAWN.timeout   # one spawn: two forks; the loop waits this long at most


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ==== the supervisor's side ================================================================
class SpawnerError(Exception):
    pass


class SpawnerProcess:
    """The supervisor's handle on one running spawner: start it, wait for ready, give orders.

    Used from the supervisor's loop thread only. Orders are synchronous with a deadline
    (ORDER_TIMEOUT): a spawn is two forks in a process that does nothing else, a few ms —
    what the supervisor's own fork cost on the exec path.
    """

    def __init__(self, python: str, env: Dict[str, str]):
        self.child = launch.spawn("spawner", None, env, python)
        self.pid = self.child.pid
        self.log_fd = self.child.log_fd
        self.channel = Channel(self.child.channel)
        self.child.channel.setblocking(True)
        self.ready = False
        self.started = time.monotonic()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        try:
            msg, fds = self.channel.receive(time.monotonic() + timeout, want_fds=False)
        except IpcError as e:
            raise SpawnerError("no spawner.ready: %s" % e.message) from None
        if not isinstance(msg, envelope.Notice) or msg.notice != "spawner.ready" \
                or msg.args.get("pid") != self.pid:
            raise SpawnerError("unexpected first message from the spawner")
        self.ready = True

    def spawn(self, name: str, module: str, identity, env: Dict[str, str],
              cgroup: Optional[str] = None):
        """Order a worker; returns launch.Spawned like spawn.spawn does."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_r, log_w = os.pipe()
        try:
            try:
                result, fds = self.channel.call("spawner.spawn", {
                    "worker": name, "module": module,
                    "uid": None if identity is None else identity.uid,
                    "gid": None if identity is None else identity.gid,
                    "env": env, "cgroup": cgroup},
                    timeout=ORDER_TIMEOUT, fds=[child_end.fileno(), log_w])
            except IpcError as e:
                raise SpawnerError("spawner.spawn: %s %s" % (e.code, e.message)) from None
            for fd in fds:
                _close(fd)
        except BaseException:
            parent_end.close()
            _close(log_r)
            raise
        finally:
            child_end.close()
            _close(log_w)
        parent_end.setblocking(False)
        os.set_blocking(log_r, False)
        return launch.Spawned(result["pid"], parent_end, log_r)

    def close(self) -> None:
        """Tell it to leave (EOF on its channel); the supervisor reaps it."""
        self.channel.close()


class Zygote:
    """The supervisor's spawner, kept alive: started at open(), restarted when it dies, and
    given up for fork+exec (with a log line) when it cannot be started or dies too often.

    `sel` is the supervisor's selector (the spawner's log pipe is read in its loop);
    `capture()` returns the Capture its log lines go to (spawner.log).
    """

    ATTEMPTS = 3            # tries per (re)start before falling back to fork+exec
    MAX_DEATHS = 5          # deaths within DEATH_WINDOW before falling back
    DEATH_WINDOW = 300.0

    def __init__(self, python: str, env: Dict[str, str], sel, capture, log):
        self.python, self.env, self.sel, self.make_capture, self.log = \
            python, env, sel, capture, log
        self.proc: Optional[SpawnerProcess] = None
        self.capture = None
        self.disabled: Optional[str] = None   # why we fell back to fork+exec
        self.deaths = []
        self.starts = 0

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def deadline(self) -> Optional[float]:
        """When reap() must look again: a restarted spawner's READY_TIMEOUT (the loop sleeps
        until its nearest deadline)."""
        if self.proc is None or self.proc.ready:
            return None
        return self.proc.started + READY_TIMEOUT

    def start(self, wait: bool = True) -> None:
        """(Re)start the spawner. wait=True (start-up, before any worker): block until it
        is ready, trying ATTEMPTS times. wait=False (a restart while workers run): the loop
        must not block for a fresh interpreter's imports, so its `spawner.ready` is read by
        the loop; spawns until then use fork+exec."""
        if self.disabled:
            return
        try:
            launch.set_child_subreaper()
        except OSError as e:
            self.fall_back("cannot become a child subreaper: %s" % e)
            return
        last = ""
        for _ in range(self.ATTEMPTS if wait else 1):
            try:
                self.proc = SpawnerProcess(self.python, self.env)
            except OSError as e:
                last = "spawn failed: %s" % e
                continue
            self.capture = self.make_capture()
            self.sel.register(self.proc.log_fd, 1, self._on_log)   # 1: EVENT_READ
            if not wait:
                self.sel.register(self.proc.channel.sock, 1, self._on_ready)
                return
            try:
                self.proc.wait_ready()
            except SpawnerError as e:
                last = str(e)
                self._kill_and_reap()
                continue
            self._started()
            return
        self.fall_back("the spawner did not start (%d attempt(s)): %s"
                       % (self.ATTEMPTS if wait else 1, last))

    def _started(self) -> None:
        self.starts += 1
        self.log.info("event=spawner_start pid=%d starts=%d ready_after=%.3fs",
                      self.proc.pid, self.starts, time.monotonic() - self.proc.started)

    def _on_ready(self, key, mask) -> None:
        self.sel.unregister(key.fileobj)
        if self.proc is None or self.proc.channel.sock is not key.fileobj:
            return
        try:
            self.proc.wait_ready(timeout=1.0)
        except SpawnerError as e:
            self.log.error("event=spawner_failed pid=%d error=%r", self.proc.pid, str(e))
            os.kill(self.proc.pid, signal.SIGKILL)   # reap() counts it and starts another
            return
        self._started()

    def fall_back(self, why: str) -> None:
        self.disabled = why
        self.log.error("event=spawner_fallback method=exec reason=%r", why[:300])

    def spawn(self, name: str, module: str, identity, env: Dict[str, str],
              cgroup: Optional[str] = None):
        """A worker forked by the spawner, or None: the caller uses fork+exec this time."""
        if self.proc is None or not self.proc.ready:
            return None
        try:
            return self.proc.spawn(name, module, identity, env, cgroup)
        except SpawnerError as e:
            self.log.error("event=spawner_failed pid=%d worker=%s error=%r action=restart",
                           self.proc.pid, name, str(e)[:300])
            os.kill(self.proc.pid, signal.SIGKILL)   # reap() counts it and starts another
            return None

    def reap(self, restart: bool) -> None:
        """After SIGCHLD: has the spawner died? Log it and start another."""
        if self.proc is None:
            return
        try:
            pid, status = os.waitpid(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.proc.pid, 0
        if pid == 0:
            if not self.proc.ready and time.monotonic() - self.proc.started > READY_TIMEOUT:
                self.log.error("event=spawner_failed pid=%d error='no spawner.ready in %.0fs'"
                               % (self.proc.pid, READY_TIMEOUT))
                os.kill(self.proc.pid, signal.SIGKILL)
            return
        self.log.warning("event=spawner_exit pid=%d status=%r", pid, launch.describe_status(status))
        self._forget()
        if not restart:
            return
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < self.DEATH_WINDOW] + [now]
        if len(self.deaths) > self.MAX_DEATHS:
            self.fall_back("died %d times within %.0fs" % (len(self.deaths), self.DEATH_WINDOW))
            return
        self.start(wait=False)

    def close(self, timeout: float = 5.0) -> None:
        """At the supervisor's end: EOF tells it to leave; SIGKILL if it does not."""
        if self.proc is None:
            return
        self.proc.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            time.sleep(0.01)
        else:
            self._kill_and_reap()
            return
        self._forget()

    def _kill_and_reap(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.proc.pid, 0)
        except ChildProcessError:
            pass
        self._forget()

    def _forget(self) -> None:
        proc, self.proc = self.proc, None
        try:
            self.sel.unregister(proc.channel.sock)
        except (KeyError, ValueError):
            pass
        proc.channel.close()
        try:
            self.sel.unregister(proc.log_fd)
        except (KeyError, ValueError):
            pass
        if self.capture is not None:
            # What it wrote last (a traceback) still goes to spawner.log.
            self.capture.pump(proc.log_fd, reads=64)
            self.capture.close()
            self.capture = None
        _close(proc.log_fd)

    def _on_log(self, key, mask) -> None:
        if not self.capture.pump(key.fd):
            self.sel.unregister(key.fd)
