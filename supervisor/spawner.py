"""The preloaded spawner (a zygote): workers forked from one clean, preloaded image.

Why (benchmarks/README.md, "Supervisor"): every fork+exec'd worker imports requests,
cryptography and defusedxml on its own (~19 MiB private heap each, ~145 ms per start). Forked
from one process that imported them once, the four workers share those pages.

How it keeps DESIGN.md principle 7 (a clean image):
- The spawner is **fork+exec'd** by the supervisor (supervisor/spawn.py, identity None: it
  stays root, which it needs to drop children to the worker users), not forked from it. A
  fork of the supervisor would carry the supervisor's heap — the parsed configuration, log
  buffers, whatever the broker has seen — and its descriptors; a fresh interpreter carries
  nothing but what it imports, at any moment the supervisor starts or restarts it. It is
  started in Supervisor.open(), before the first worker and before any worker has sent the
  supervisor anything.
- Its image: fd 0 /dev/null, 1 and 2 its log pipe (filed as spawner.log), 3 its channel to the
  supervisor; a clean environment; PR_SET_PDEATHSIG(SIGKILL) tied to the supervisor;
  NO_NEW_PRIVS. It imports the worker modules and what they import, then `gc.freeze()`s the
  heap (so the collector does not write to, and un-share, the preloaded objects) and says
  `spawner.ready`. It handles no platform data, no secret and no file: a spawn order holds a
  worker name, a module name, uid/gid and the worker's environment (no secret in it either:
  secrets never go on argv or in the environment).
- It obeys one verb, `spawner.spawn` (ipc/verbs/spawner.py, strict schema, exactly two
  descriptors: the worker's channel end and log pipe), from its own socketpair only.

Who is the worker's parent — a double fork onto a subreaper: the supervisor sets
PR_SET_CHILD_SUBREAPER; the spawner forks an intermediate that forks the worker and exits at
once, so the worker is reparented to the supervisor. The supervisor then reaps and signals
the worker by pid exactly as a fork+exec'd one (waitpid per pid, states, backoff, hang and
memory checks, stop order), a dead spawner takes no worker with it, and PDEATHSIG ties each
worker to the supervisor, not to the spawner. The other way (workers as the spawner's
children, exit statuses relayed) would make the spawner a second supervisor, lose the
statuses whenever it dies, and tie the workers' lives to it. The worker arms PDEATHSIG only
after the reparent and checks getppid() afterwards (supervisor/spawn.py _become_worker), so a
supervisor dying in between cannot leave it behind.

In the worker, before its main: the same steps as the exec path (spawn._become_worker: own
session, only its channel on 3, log pipe on 1+2, /dev/null on 0, every other descriptor closed
— the spawner's socket included —, bounding and ambient capabilities emptied, setgroups([]),
gid guestagent-wire, uid, PDEATHSIG, NO_NEW_PRIVS, signals reset, umask 077, cwd /), then
the interpreter's own start-up dispositions (SIGPIPE/SIGXFSZ ignored, SIGINT raises), the
environment cleared to the order's, `random` re-seeded from os.urandom, the process title,
and `runpy` runs `<module>.__main__` as `python -I -m` does (the spawner itself runs with -I).
What stays shared with the spawner: the preloaded modules (that is the point) and the
interpreter's string-hash seed (PYTHONHASHSEED randomisation happens once per exec: all
workers forked from one spawner share it; it protects dicts against hash flooding, and the
workers parse untrusted input, so a spawner restart or Agent.Spawner=exec gives new seeds).
OpenSSL's RNG reseeds itself after fork (OpenSSL >= 1.1.1 checks the pid).

If the spawner dies the supervisor logs it and starts another; if that fails it falls back to
fork+exec for good, with a log line. `Agent.Spawner=exec` skips the spawner altogether.
"""

import os
import select
import signal
import socket
import sys
import time
from typing import Dict, Optional

from ipc import envelope
from ipc.channel import Channel
from ipc.errors import ChannelClosed, IpcError

EXIT_PRELOAD = 3         # the spawner could not start (see its log)
READY_TIMEOUT = 30.0     # start-up: imports of requests + cryptography on a slow, busy VM
ORDER_TIMEOUT = 5.0      # one spawn: two forks; the supervisor's loop waits this long at most
REPARENT_TIMEOUT = 5.0   # the worker waits this long for its intermediate parent to exit
PROCTITLE = "guestagent: spawner [priv]"
TEST_FILE = "spawner"    # <GUESTAGENT_TEST_DIR>/spawner: "crash" = exit at start (tests only)


# ==== the spawner process ==================================================================
# What the workers import, at the top and inside functions (a lazy import in a worker would
# otherwise load a private copy in each worker that reaches it): the heavy libraries are
# named here too, so a worker module that fails to import still leaves them loaded.
PRELOAD = (
    "requests", "cryptography.x509", "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.asymmetric.rsa", "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.decrepit.ciphers.algorithms", "defusedxml.ElementTree",
    "setproctitle", "logging", "threading", "runpy", "random", "json", "subprocess", "atexit",
    "traceback", "workers.base", "workers.platform", "workers.platform.reports",
    "workers.platform.certificates",
)


def preload(modules) -> None:
    """Import what the workers import, once, before any order (and before gc.freeze)."""
    import importlib
    for name in PRELOAD:
        _import(importlib, name)
    for module in modules:
        _import(importlib, module)
        # A package's __main__ is imported for what it imports, then dropped: runpy runs it
        # afresh in the worker under the name __main__ (its imports are cached by then).
        if _import(importlib, module + ".__main__"):
            sys.modules.pop(module + ".__main__", None)


def warm_up() -> None:
    """Run the code every worker runs — logging a line, the channel's hello / notice / reply
    round trip with its envelope and schema checks — in the spawner, before gc.freeze().

    CPython 3.11 specialises bytecode in place after a few runs and builds caches on first
    use (the logging formatter's, the json encoder's, the schemas'): done here, those writes
    land in the shared image once instead of un-sharing the same pages in every worker.
    Nothing here keeps a descriptor, a thread or data: a socketpair closed at the end."""
    import io
    import logging
    from ipc.channel import Channel
    from workers.base import UtcFormatter
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(UtcFormatter("warm-up"))
    record = logging.LogRecord("warm-up", logging.INFO, __file__, 0, "event=%s n=%d",
                               ("warm", 1), None)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker, supervisor = Channel(a), Channel(b)
    try:
        for i in range(64):
            handler.format(record)
            ident = worker.request("worker.hello", {"worker": "monitoring", "pid": 1,
                                                    "version": "0"})
            msg, _ = supervisor.receive(time.monotonic() + 5)
            supervisor.reply(msg.id, {"heartbeat_interval": 5.0})
            reply, _ = worker.receive(time.monotonic() + 5)
            assert reply.id == ident
            worker.notify("worker.heartbeat")
            worker.notify("worker.status", {"message": "warm-up %d" % i})
            for _ in range(2):
                supervisor.receive(time.monotonic() + 5)
            try:
                worker.receive(time.monotonic() + 0.0001)   # the idle wait's timeout path
            except IpcError:
                pass
    finally:
        worker.close()
        supervisor.close()


# The capabilities the spawner keeps (measured: tests/integration/test_spawner.py). In each
# forked worker spawn._become_worker needs CAP_SETPCAP to empty the bounding set, CAP_SETGID
# for setgroups/setresgid, CAP_SETUID for setresuid. Nothing else: the spawner opens no
# file it does not own (no CAP_DAC_*), signals no one (no CAP_KILL: it only waits for its
# intermediate child), binds nothing, mounts nothing.
KEEP_CAPS = (6, 7, 8)   # CAP_SETGID, CAP_SETUID, CAP_SETPCAP


def drop_capabilities() -> None:
    """Keep KEEP_CAPS only: bounding set, then permitted and effective (capset); no
    inheritable or ambient ones. A root-uid process without the rest cannot regain them:
    NO_NEW_PRIVS is set and the bounding set is gone."""
    from supervisor import spawn
    spawn.keep_capabilities(KEEP_CAPS)


def _import(importlib, name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception as e:  # the worker will meet the same error and report it itself
        print("spawner: preload of %s failed: %s: %s" % (name, type(e).__name__, e),
              file=sys.stderr, flush=True)
        return False


def main() -> int:
    import gc
    try:
        import setproctitle
        setproctitle.setproctitle(PROCTITLE)
    except ImportError:
        pass
    test_dir = os.environ.get("GUESTAGENT_TEST_DIR")
    if test_dir and _test_action(test_dir) == "crash":
        print("spawner: test hook: crashing at start", file=sys.stderr, flush=True)
        return EXIT_PRELOAD
    from supervisor import spawn, table
    modules = [spec.module for spec in table.BASE]
    supervisor_pid = os.getppid()
    channel = Channel.from_fd(spawn.CHANNEL_FD)
    preload(modules)
    try:
        warm_up()
    except Exception as e:  # noqa: B902 - a worse image, not a broken spawner
        print("spawner: warm-up failed: %s: %s" % (type(e).__name__, e), file=sys.stderr,
              flush=True)
    if os.geteuid() == 0:
        drop_capabilities()
    gc.collect()
    gc.freeze()
    channel.notify("spawner.ready", {"pid": os.getpid()})
    while True:
        try:
            msg, fds = channel.receive(None)
        except ChannelClosed:   # EOF: the supervisor is stopping (or gone)
            return 0
        except IpcError as e:   # a bad frame from the supervisor: a bug; leave, be restarted
            print("spawner: %s" % e, file=sys.stderr, flush=True)
            return 2
        try:
            result = _serve(channel, msg, fds, set(modules), supervisor_pid)
        finally:
            for fd in fds:
                _close(fd)
        if isinstance(msg, envelope.Request):
            if isinstance(result, IpcError):
                channel.reply_error(msg.id, result.code, result.message)
            else:
                channel.reply(msg.id, result)
        del msg, fds, result


def _serve(channel, msg, fds, modules, supervisor_pid):
    from ipc.verbs import check_args, lookup
    if not isinstance(msg, envelope.Request) or msg.verb != "spawner.spawn":
        return IpcError("UNKNOWN_VERB", "the spawner takes spawner.spawn only")
    try:
        check_args(lookup(msg.verb), msg.args)
    except IpcError as e:
        return e
    args = msg.args
    if len(fds) != 2:
        return IpcError("INVALID_ARGS", "spawner.spawn carries exactly two descriptors")
    if args["module"] not in modules:
        return IpcError("DENIED", "%s is not a worker module" % args["module"])
    if (args["uid"] is None) != (args["gid"] is None):
        return IpcError("INVALID_ARGS", "uid and gid go together")
    try:
        return {"pid": fork_worker(channel, args, fds[0], fds[1], supervisor_pid)}
    except OSError as e:
        return IpcError("FAILED", "fork failed: %s" % e)


def fork_worker(channel, args: dict, channel_fd: int, log_fd: int, supervisor_pid: int) -> int:
    """Double fork; returns the worker's pid once its intermediate parent has exited."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid_r, pid_w = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        _close(pid_r)
        _close(pid_w)
        raise
    if middle == 0:   # the intermediate: fork the worker, report its pid, leave
        code = 0
        try:
            _close(pid_r)
            middle = os.getpid()
            worker = os.fork()
            if worker == 0:
                _close(pid_w)
                _worker(channel, args, channel_fd, log_fd, supervisor_pid, middle)  # no return
            os.write(pid_w, worker.to_bytes(4, "big"))
        except BaseException:  # noqa: B902 - nothing may return into the spawner's loop
            code = 1
        os._exit(code)
    _close(pid_w)
    try:
        data = _read_all(pid_r, 4, time.monotonic() + ORDER_TIMEOUT)
    finally:
        _close(pid_r)
        _waitpid(middle)
    if len(data) != 4:
        raise OSError("the intermediate process did not report the worker's pid")
    return int.from_bytes(data, "big")


def _worker(channel, args, channel_fd, log_fd, supervisor_pid, middle):
    """In the forked worker: become the worker, run its module; never returns."""
    try:
        from supervisor import spawn
        # The spawner's socket object must not close "its" fd 3 later: that will be ours.
        channel.sock.detach()
        deadline = time.monotonic() + REPARENT_TIMEOUT
        while os.getppid() == middle:   # the intermediate exits at once: we go to the
            if time.monotonic() > deadline:  # supervisor (its subreaper)
                os._exit(spawn.SPAWN_FAILED)
            time.sleep(0.0002)
        devnull = os.open("/dev/null", os.O_RDWR)
        identity = None if args["uid"] is None else spawn.Identity(args["uid"], args["gid"])
        # Arms PDEATHSIG after the uid change and exits unless our parent is the supervisor.
        spawn._become_worker(channel_fd, log_fd, devnull, identity, supervisor_pid)
        _worker_interpreter(args)
    except BaseException as e:  # noqa: B902 - report and leave, as the exec path does
        try:
            os.write(2, ("spawn of %s failed: %s\n" % (args.get("module"), e)).encode())
        finally:
            os._exit(127)
    code = _run_main(args["module"])
    os._exit(code)


def _worker_interpreter(args) -> None:
    """What a fresh `python -I -m` would have that the fork did not give."""
    import random
    # The dispositions CPython sets at start-up (spawn._become_worker reset them to SIG_DFL).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(args["env"])
    random.seed()   # from os.urandom (random also re-seeds itself after fork; say it anyway)
    sys.argv = [args["module"]]
    try:
        import setproctitle
        setproctitle.setproctitle("guestagent: %s [unpriv]" % args["worker"])
    except ImportError:
        pass


def _run_main(module: str) -> int:
    """Run `module` as `python -m` would; the exit status the interpreter would give."""
    import atexit
    import runpy
    import traceback
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code & 0xFF
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: B902 - as the interpreter: traceback, status 1
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()   # logging.shutdown and the like, as at a normal exit
    except BaseException:  # noqa: B902
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _test_action(test_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(test_dir, TEST_FILE)) as f:
            words = f.read(256).split()
    except OSError:
        return None
    return words[0] if words else None


def _read_all(fd: int, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _waitpid(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


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
        from supervisor import spawn
        env = dict(env)
        self.child = spawn.spawn("supervisor.spawner", None, env, python)
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

    def spawn(self, name: str, module: str, identity, env: Dict[str, str]):
        """Order a worker; returns spawn.Spawned like spawn.spawn does."""
        from supervisor import spawn
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_r, log_w = os.pipe()
        try:
            try:
                result, fds = self.channel.call("spawner.spawn", {
                    "worker": name, "module": module,
                    "uid": None if identity is None else identity.uid,
                    "gid": None if identity is None else identity.gid,
                    "env": env}, timeout=ORDER_TIMEOUT, fds=[child_end.fileno(), log_w])
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
        return spawn.Spawned(result["pid"], parent_end, log_r)

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
        from supervisor import spawn
        if self.disabled:
            return
        try:
            spawn.set_child_subreaper()
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

    def spawn(self, name: str, module: str, identity, env: Dict[str, str]):
        """A worker forked by the spawner, or None: the caller uses fork+exec this time."""
        if self.proc is None or not self.proc.ready:
            return None
        try:
            return self.proc.spawn(name, module, identity, env)
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
        from supervisor import spawn
        self.log.warning("event=spawner_exit pid=%d status=%r", pid, spawn.describe_status(status))
        self._forget()
        if not restart:
            return
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < self.DEATH_WINDOW] + [now]
        if len(self.deaths) > self.MAX_DEATHS:
            self.fall_back("died %d times within %.0fs" % (len(self.deaths), self.DEATH_WINDOW))
            return
        self.start(wait=False)

    def reap_adopted(self, known) -> None:
        """Reap zombies the subreaper bit made ours that no one else waits for: orphans of
        processes the broker started (a CustomData script that daemonised) and a worker whose
        order failed after its fork. Only children of the main thread: the broker's own
        subprocesses are children of its pool threads and are waited for by them."""
        me = os.getpid()
        try:
            with open("/proc/%d/task/%d/children" % (me, me)) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return
        for pid in pids:
            if pid in known:
                continue
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[-1].split()[0] != "Z":
                        continue
                got, status = os.waitpid(pid, os.WNOHANG)
            except (OSError, IndexError):
                continue
            if got:
                from supervisor.spawn import describe_status
                self.log.info("event=reaped_orphan pid=%d status=%r", pid,
                              describe_status(status))

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
        for _ in range(64):   # what it wrote last (a traceback) still goes to spawner.log
            try:
                data = os.read(proc.log_fd, 65536)
            except OSError:
                break
            if not data:
                break
            if self.capture is not None:
                self.capture.feed(data)
        try:
            self.sel.unregister(proc.log_fd)
        except (KeyError, ValueError):
            pass
        _close(proc.log_fd)
        if self.capture is not None:
            self.capture.close()
            self.capture = None

    def _on_log(self, key, mask) -> None:
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            try:
                self.sel.unregister(key.fd)
            except (KeyError, ValueError):
                pass
            return
        if self.capture is not None:
            self.capture.feed(data)


if __name__ == "__main__":
    sys.exit(main())
