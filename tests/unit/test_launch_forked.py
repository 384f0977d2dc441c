"""launch/forked.py: rare, heavy work in a real short-lived fork of the calling process — its
result comes back, its failures come back as the caller's own errors, and a fork that hangs,
floods, dies or lies costs the worker nothing but a clear error (issue 17)."""

import os
import signal
import socket
import sys
import time

import pytest

from launch import forked


class Failed(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def _run(fn, seconds=10.0, max_bytes=1 << 20, **kw):
    return forked.run(fn, Failed, time.monotonic() + seconds, max_bytes, **kw)


@pytest.fixture
def made(monkeypatch):
    """The fork's pid and its pipe, as the test needs to see them."""
    seen = {}
    real_fork, real_pipe = os.fork, os.pipe

    def fork():
        pid = real_fork()
        if pid:
            seen["pid"] = pid
        return pid

    def pipe():
        seen["r"], seen["w"] = real_pipe()
        return seen["r"], seen["w"]
    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(os, "pipe", pipe)
    return seen


def _reaped(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


class _Coded(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def test_the_result_comes_back_and_what_the_fork_imported_stays_there():
    sys.modules.pop("decimal", None)
    sys.modules.pop("_pydecimal", None)

    def work():
        import decimal
        return str(decimal.Decimal("1.5") * 2).encode() + (b"x" * 300_000)
    out = _run(work)
    assert out[:3] == b"3.0" and len(out) == 300_003
    assert "decimal" not in sys.modules


def test_an_error_comes_back_with_its_message_and_code():
    def work():
        raise _Coded(1004, "package download failed: 404")
    with pytest.raises(Failed) as e:
        _run(work)
    assert "package download failed: 404" in str(e.value) and e.value.code == 1004


def test_an_unexpected_error_names_its_type():
    with pytest.raises(Failed) as e:
        _run(lambda: {}["missing"])
    assert "KeyError" in str(e.value) and e.value.code is None


def test_a_fork_that_dies_without_a_word_is_an_error(made):
    with pytest.raises(Failed) as e:
        _run(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert "without a result" in str(e.value) and "killed by SIGKILL" in str(e.value)
    assert _reaped(made["pid"])


def test_a_hung_fork_is_killed_at_the_deadline(made):
    started = time.monotonic()
    with pytest.raises(Failed) as e:
        _run(lambda: time.sleep(60), seconds=1.0)
    assert time.monotonic() - started < 5
    assert "out of time" in str(e.value) and "killed by SIGKILL" in str(e.value)
    assert _reaped(made["pid"])   # nothing left behind


def test_a_flood_past_the_cap_is_cut_off():
    def work():
        return b"x" * (5 << 20)
    with pytest.raises(Failed) as e:
        _run(work, max_bytes=1 << 20)
    assert "more than" in str(e.value)


def test_a_lying_fork_gets_an_error_not_code_in_the_worker(made):
    """A fork taken over by hostile input writes what it likes on its pipe: a pickle,
    garbage, an error whose code is not a number. The worker reads bytes or JSON, nothing
    it would run."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch /tmp/forked-pwned",))
    for lie in (b"E" + pickle.dumps(Boom()), b"E{not json", b'E{"message": "m", "code": "x"}',
                b"Zwhat", b""):
        def work(lie=lie):
            os.write(made["w"], lie)
            os._exit(0)
        with pytest.raises(Failed) as e:
            _run(work)
        assert "without a result" in str(e.value), lie
        assert _reaped(made["pid"])
    assert not os.path.exists("/tmp/forked-pwned")


def test_the_fork_cannot_speak_on_the_broker_channel():
    """Only the worker talks to the broker: the fork closes its copy of the channel first,
    so frames from two processes never interleave on it."""
    ours, broker = socket.socketpair()

    class Channel:
        def fileno(self):
            return ours.fileno()

    def work():
        try:
            os.write(ours.fileno(), b"frame from the fork")
        except OSError as e:
            return b"closed: %d" % e.errno
        return b"written"
    try:
        assert _run(work, channel=Channel()) == b"closed: 9"   # EBADF
        broker.setblocking(False)
        with pytest.raises(BlockingIOError):
            broker.recv(100)
        ours.sendall(b"still the worker's")   # the worker's own copy is open
        assert broker.recv(100) == b"still the worker's"
    finally:
        ours.close()
        broker.close()


def test_the_worker_stopping_takes_the_fork_with_it(made):
    """SIGTERM raises WorkerStop in the worker while it waits: the fork is killed and reaped."""
    class Stop(Exception):
        pass

    def on_term(signum, frame):
        raise Stop()
    old = signal.signal(signal.SIGALRM, on_term)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Stop):
            _run(lambda: time.sleep(60), seconds=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert _reaped(made["pid"])


def test_a_pipe_numbered_past_1024_is_read(made):
    """The supervisor raises its descriptor limit to 8192 (supervisor/loop.py): the pipe to a
    broker's fork can be numbered past select()'s 1024."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("the hard descriptor limit is %d" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.dup(0))
        assert _run(lambda: b"read") == b"read"
        assert made["r"] > 1024
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
