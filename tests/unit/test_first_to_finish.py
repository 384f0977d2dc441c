"""The broker's race of key searches (supervisor/privileged first_to_finish): real child
processes through run(), as the transport key and the host keys use it. The first attempt to
end wins; every other one is ended with its whole process group before the race returns, and
the supervisor stopping ends them all."""

import os
import subprocess
import threading
import time

import pytest

from ipc.errors import IpcError
from supervisor.privileged import first_to_finish, run


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie (a killed grandchild waits for init to reap it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _pids(path):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path).read().count("\n") >= 2:
            return [int(w) for w in open(path).read().split()]
        time.sleep(0.02)
    raise AssertionError("the child did not write its pids")


def _tree(tmp_path, name):
    """A command that leaves a child of its own and waits: both pids written to a file."""
    out = tmp_path / name
    return ["sh", "-c", "sleep 600 & echo $! >> %s; echo $$ >> %s; wait" % (out, out)], out


def test_the_first_to_end_wins_and_the_other_is_ended_with_its_children(tmp_path):
    slow, pids = _tree(tmp_path, "slow")
    attempts = [lambda stop: run(slow, timeout=60, cancel=stop),
                lambda stop: (_pids(pids), run(["true"], timeout=60, cancel=stop))]
    start = time.monotonic()
    assert first_to_finish(attempts) == 1
    assert time.monotonic() - start < 10
    for pid in _pids(pids):
        assert _gone(pid), "the loser's process %d lives on" % pid


def test_a_failing_attempt_does_not_end_the_race(tmp_path):
    attempts = [lambda stop: run(["false"], timeout=60, cancel=stop),
                lambda stop: (time.sleep(0.3), run(["true"], timeout=60, cancel=stop))]
    assert first_to_finish(attempts) == 1


def test_when_every_attempt_fails_the_first_error_is_raised():
    attempts = [lambda stop: run(["false"], timeout=60, cancel=stop),
                lambda stop: (time.sleep(0.5), run(["sh", "-c", "exit 3"], timeout=60,
                                                   cancel=stop))]
    with pytest.raises(IpcError, match="false exited 1"):
        first_to_finish(attempts)


def test_the_supervisor_stopping_ends_every_search(tmp_path):
    one, pids_one = _tree(tmp_path, "one")
    two, pids_two = _tree(tmp_path, "two")
    cancel = threading.Event()
    attempts = [lambda stop: run(one, timeout=60, cancel=stop),
                lambda stop: run(two, timeout=60, cancel=stop)]
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(IpcError, match="the supervisor is stopping"):
        first_to_finish(attempts, cancel)
    assert time.monotonic() - start < 10
    for pid in _pids(pids_one) + _pids(pids_two):
        assert _gone(pid), "process %d lives on" % pid
    # (nothing is left for the test's own process to reap either)
    assert subprocess.run(["pgrep", "-f", "sleep 600 & echo"], capture_output=True
                          ).returncode == 1
