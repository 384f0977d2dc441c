"""What a test or `make demo` starts, it stops: a confined host started twice leaves neither
agent running once stopped, and `make demo` interrupted by SIGTERM stops the agent and the
emulator it started."""

import glob
import os
import signal
import subprocess
import time

import psutil
import pytest

from emulator.confinement import GUESTAGENTD, PYTHON

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
DONE = "event=provisioning_done"


def _hold(pid):
    """A descriptor of pid's mount namespace: while it is open the namespace lives on, so its
    number is never given to a namespace another run makes after the agent is gone (a
    concurrent run's confined host would otherwise look like our leftover)."""
    return os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY | os.O_CLOEXEC)


def _in_namespace(ns):
    out = []
    for p in psutil.process_iter():
        try:
            if os.readlink("/proc/%d/ns/mnt" % p.pid) == ns and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (OSError, psutil.Error):
            pass
    return out


def test_a_host_started_twice_leaves_neither_agent_running(make_host):
    """The leak of issue 11: a second start replaced the first supervisor's handle, and the first
    agent (supervisor, spawner, workers) ran on after the test had deleted its folder."""
    host = make_host()
    host.start()
    host.wait_log(DONE, 60)
    first, first_ns = host.proc, host.mount_namespace()
    held = [_hold(first.pid)]
    assert first_ns and first_ns != os.readlink("/proc/self/ns/mnt")
    # At least the supervisor and its spawner.
    assert len(_in_namespace(first_ns)) >= 2, [p.cmdline() for p in _in_namespace(first_ns)]
    host.start()
    host.exec_time()
    deadline = time.monotonic() + 30
    while host.mount_namespace() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second_ns = host.mount_namespace()
    assert second_ns and second_ns != first_ns
    try:
        held.append(_hold(host.proc.pid))
        host.stop()
        assert first.poll() is not None
        assert _in_namespace(first_ns) == []
        assert _in_namespace(second_ns) == []
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.parametrize("when", ["agent_running", "cleaning_up"])
def test_make_demo_interrupted_stops_the_agent_and_the_emulator(when):
    """SIGTERM while the agent runs, and while the demo already stops it: a SIGTERM that cut
    the clean-up short left the emulator running (provisioning got fast enough that a
    signal one second in came during the clean-up)."""
    if os.geteuid() != 0:
        pytest.skip("the demo needs root (namespaces, useradd in a copied /etc)")
    if not os.path.exists(GUESTAGENTD):
        pytest.fail("%s is missing: run `make venv` first" % GUESTAGENTD)
    demo = subprocess.Popen([PYTHON, "-m", "emulator.demo", "--keep"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    held = None
    try:
        root = None
        for line in demo.stdout:
            if line.startswith("confined host: "):
                root = line.split()[2]
                break
        assert root, "the demo printed no confined host"
        deadline = time.monotonic() + 60
        while not glob.glob(os.path.join(root, "mnt_ns.*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        ns_file = glob.glob(os.path.join(root, "mnt_ns.*"))[0]
        # Held at once: the whole demo now takes about a second, so a fixed wait here could
        # find the agent already gone.
        held = _hold(int(ns_file.rsplit(".", 1)[1]))
        ns = open(ns_file).read().strip()
        while len(_in_namespace(ns)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)   # the supervisor, and the spawner it begins at once
        started = psutil.Process(demo.pid).children(recursive=True)
        assert any("emulator" in " ".join(p.cmdline()) for p in started), started
        assert _in_namespace(ns)
        seen = []
        if when == "cleaning_up":
            # "Result:" is the last line before the demo's clean-up starts.
            for line in demo.stdout:
                seen.append(line)
                if line.startswith("Result:"):
                    break
        demo.send_signal(signal.SIGTERM)
        rest = "".join(seen) + demo.stdout.read()
        assert demo.wait(60) != 0, rest
        left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], [p.cmdline() for p in left]
        assert _in_namespace(ns) == []
    finally:
        if held is not None:
            os.close(held)
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if root:
            subprocess.run(["rm", "-rf", "--one-file-system", root])
