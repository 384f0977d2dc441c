"""Rare, heavy work in a short-lived fork of the caller, so that what it loads leaves with it.

A resident process stays small only if the libraries of its rare jobs never load in it:
decrypting tenant certificates (cryptography, asn1crypto) and downloading from storage
(requests, urllib3, idna) would otherwise stay in the extensions worker for the life of the VM,
and in the spawner's image that every worker shares (issue 17: ~12 MiB of the image, more in the
worker that used them); the broker's extraction of an extension package (zipfile, pathlib,
importlib.util: ~0.7 MiB) would stay in the supervisor. A fork shares the caller's pages, does
the one job, writes its result to a pipe and exits; the caller reads the result and goes on.
The broker forks from a pool thread: the fork runs only the job's own code and os._exit, and is
reaped by that thread (the loop reaps only the main thread's children, supervisor/trees.py).

In a worker, the fork is the worker's own code under the worker's own uid, with less than it has:
it closes the broker channel first (only the worker talks to the broker, so frames from two
processes never interleave on it) and drops the worker's kept HTTP connections (it opens its
own); it sends back bytes, or an error as JSON — never a pickle, so a fork that hostile input
took over cannot run code in the worker. It dies with the worker (PDEATHSIG) and by SIGTERM;
the worker kills it at the deadline and takes no more than `max_bytes` from it.
"""

import json
import os
import select
import signal
import time
from typing import Callable, Optional

import launch

ERROR_BYTES = 64 * 1024     # an error's JSON: a message, trimmed by the fork
OWN_PACKAGES = ("workers", "ipc", "supervisor")   # their errors' messages go back as they are


def run(fn: Callable[[], bytes], error: Callable[[str, Optional[int]], Exception],
        deadline: float, max_bytes: int, channel=None, http=None) -> bytes:
    """fn() in a fork; its bytes, or error(message, code) raised here when it raised (`code`:
    its exception's `code` attribute, e.g. a PackageError's), died, overran `max_bytes` or
    ran past `deadline` (monotonic). `channel`: the worker's broker channel, closed in the
    fork; `http`: an HttpClient whose kept connections the fork must not use."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:   # ---- the fork -------------------------------------------------------
        code = 1
        try:   # nothing here may return into the caller's code: os._exit in any case
            os.close(r)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)   # a signal to the fork never wakes the caller's loop
            launch.prctl(launch.PR_SET_PDEATHSIG, signal.SIGKILL)
            if channel is not None:
                os.close(channel.fileno())
            if http is not None:   # its copies of the sockets: the worker's stay open
                http.close()
            try:
                out, code = b"R" + fn(), 0
            except Exception as e:   # any failure goes back to the caller, as a message
                ours = type(e).__module__.split(".")[0] in OWN_PACKAGES
                message = str(e) if ours else "%s: %s" % (type(e).__name__, e)
                code = getattr(e, "code", None)
                out = b"E" + json.dumps({"message": message[:ERROR_BYTES // 2],
                                         "code": code if type(code) is int else None}).encode()
                code = 1
            view = memoryview(out)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(code)
    # ---- the caller --------------------------------------------------------------------------
    os.close(w)
    try:
        data, why = _read(r, deadline, max_bytes + 1 + ERROR_BYTES)
    except BaseException:   # the caller is stopping (a worker's WorkerStop): the fork goes too
        _end(pid, 0.0)
        raise
    finally:
        os.close(r)
    status = _end(pid, deadline if why is None else 0.0)
    if why is None and data[:1] == b"R" and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        if len(data) - 1 > max_bytes:
            raise error("the result is larger than %d bytes" % max_bytes, None)
        return bytes(data[1:])
    if why is None and data[:1] == b"E" and len(data) <= ERROR_BYTES:
        try:
            reply = json.loads(data[1:])
            message, code = str(reply["message"]), reply["code"]
        except (ValueError, KeyError, TypeError):
            message, code = None, None
        if message is not None and (code is None or type(code) is int):
            raise error(message, code)
        why = "an unreadable error"
    raise error("its fork ended without a result (%s; %s)"
                % (why or "%d bytes" % len(data), launch.describe_status(status)), None)


def _read(fd: int, deadline: float, cap: int):
    """What the fork writes until it closes the pipe: (bytes, None), or (bytes so far, why
    not) when the deadline passed or the cap was exceeded."""
    data = bytearray()
    poller = select.poll()   # not select(): the supervisor's descriptors may pass 1024
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "out of time"
        if not poller.poll(left * 1000):
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return data, None
        data += chunk
        if len(data) > cap:
            return data, "more than %d bytes" % cap


def _end(pid: int, deadline: float) -> int:
    """Its wait status: it has closed the pipe and is exiting; past `deadline` it is killed."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.01)
