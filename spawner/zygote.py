"""The spawner process: preload the workers' code, warm it up, keep three capabilities,
then fork a clean worker per `spawner.spawn` order (the why: spawner/__init__.py)."""

import os
import select
import signal
import socket
import sys
import time
from typing import Optional

from ipc import envelope, handshake
from ipc.channel import Channel
from ipc.errors import ChannelClosed, IpcError
from ipc.verbs.spawner import SPAWN

EXIT_PRELOAD = 3         # the spawner could not start (see its log)
ORDER_TIMEOUT = SPAWN.timeout   # one spawn: two forks; the supervisor waits this long at most
REPARENT_TIMEOUT = 5.0   # the worker waits this long for its intermediate parent to exit
PROCTITLE = handshake.title("spawner", privileged=True)
TEST_FILE = "spawner"    # <GUESTAGENT_TEST_DIR>/spawner: "crash" = exit at start (tests only)


# ==== the spawner process ==================================================================
# What the resident workers import, at the top and inside functions (a lazy import in a worker
# would otherwise load a private copy in each worker that reaches it), so a worker module that
# fails to import still leaves them loaded. Measured (sys.modules of the resident workers after
# goal states, benchmarks/README.md "Footprint"): the jobs of the two resident workers are
# imported after the fork unless named here. Not here, on purpose: requests, cryptography and
# asn1crypto (~26 MiB of the image's 38): the resident workers never load them — certificates
# and downloads are decrypted and fetched in a short-lived fork of the extensions worker
# (launch/forked.py) — and provisioning, which runs once, loads what it needs itself. Nor
# dataclasses, which imports inspect, ast and dis (~1.2 MiB in each worker) and execs each
# class's methods: the records the resident workers import are NamedTuples, or plain classes
# with __slots__ where they change (issue 17; config/keys.py Key, for the supervisor).
PRELOAD = (
    "defusedxml.ElementTree", "http.client",
    "setproctitle", "logging", "threading", "runpy", "random", "json", "subprocess", "atexit",
    "traceback", "workers.base", "launch.forked", "workers.platform", "workers.platform.reports",
    "workers.extensions.job", "workers.monitoring.job",
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
    # Non-blocking: the timeout path below then ends at its deadline instead of waiting out
    # the kernel's receive timeout, which is at least one clock tick (4 ms at HZ=250): 64 of
    # those were half a second of every agent start (issue 17). Every other read here finds
    # its frame already written, as the sequence is run in this one thread.
    a.setblocking(False)
    worker, supervisor = Channel(a), Channel(b)
    try:
        for i in range(64):
            handler.format(record)
            ident = worker.request("worker.hello", {"worker": "monitoring", "pid": 1,
                                                    "protocol": handshake.PROTOCOL_VERSION})
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
# forked worker launch._become_worker needs CAP_SETPCAP to empty the bounding set, CAP_SETGID
# for setgroups/setresgid, CAP_SETUID for setresuid. Nothing else: the spawner opens no
# file it does not own (no CAP_DAC_*), signals no one (no CAP_KILL: it only waits for its
# intermediate child), binds nothing, mounts nothing.
KEEP_CAPS = (6, 7, 8)   # CAP_SETGID, CAP_SETUID, CAP_SETPCAP


def drop_capabilities() -> None:
    """Keep KEEP_CAPS only: bounding set, then permitted and effective (capset); no
    inheritable or ambient ones. A root-uid process without the rest cannot regain them:
    NO_NEW_PRIVS is set and the bounding set is gone."""
    import launch
    launch.keep_capabilities(KEEP_CAPS)


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
    test_dir = os.environ.get(handshake.ENV_TEST_DIR)
    if test_dir and _test_action(test_dir) == "crash":
        print("spawner: test hook: crashing at start", file=sys.stderr, flush=True)
        return EXIT_PRELOAD
    import launch
    from supervisor import table
    modules = [spec.module for spec in table.BASE]
    supervisor_pid = os.getppid()
    channel = Channel.from_fd(handshake.CHANNEL_FD)
    # No collection while the image is built (gc.freeze's documented recipe): a collection
    # frees objects amid the preloaded ones, and each worker's first allocations then fill
    # those holes, un-sharing every page they are on. The garbage of the imports is frozen
    # with the rest (shared, written by no one); each worker enables the collector again.
    gc.disable()
    launch.tune_malloc()   # inherited by every worker forked from here
    # The resident workers' modules only: the image stays mapped in each of them for the life
    # of the VM, so what only provisioning (once) or the log collector (hourly, mostly after
    # the spawner has retired) imports is loaded by that worker itself.
    preload([spec.module for spec in table.BASE if spec.resident])
    try:
        warm_up()
    except Exception as e:  # noqa: B902 - a worse image, not a broken spawner
        print("spawner: warm-up failed: %s: %s" % (type(e).__name__, e), file=sys.stderr,
              flush=True)
    if os.geteuid() == 0:
        drop_capabilities()
    gc.freeze()
    gc.enable()   # the spawner's own objects from now on (its order loop: a few dozen)
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
        import launch
        # The spawner's socket object must not close "its" fd 3 later: that will be ours.
        channel.sock.detach()
        deadline = time.monotonic() + REPARENT_TIMEOUT
        while os.getppid() == middle:   # the intermediate exits at once: we go to the
            if time.monotonic() > deadline:  # supervisor (its subreaper)
                os._exit(launch.SPAWN_FAILED)
            time.sleep(0.0002)
        devnull = os.open("/dev/null", os.O_RDWR)
        identity = None if args["uid"] is None else launch.Identity(args["uid"], args["gid"])
        # Arms PDEATHSIG after the uid change and exits unless our parent is the supervisor.
        launch._become_worker(channel_fd, log_fd, devnull, identity, supervisor_pid,
                             args.get("cgroup"))
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
    # The dispositions CPython sets at start-up (launch._become_worker reset them to SIG_DFL).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(args["env"])
    random.seed()   # from os.urandom (random also re-seeds itself after fork; say it anyway)
    sys.argv = [args["module"]]
    try:
        import setproctitle
        setproctitle.setproctitle(handshake.title(args["worker"]))
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
