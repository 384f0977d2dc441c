"""The emulator as a real process on 127.0.0.1, and a guard that fails any connection elsewhere."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from config import defaults

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "emulator" / "scenarios" / "default.json"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Emulator:
    def __init__(self, args, cwd):
        self.proc = subprocess.Popen([sys.executable, "-m", "emulator", "serve", *args], cwd=str(cwd),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            self.proc.wait(timeout=5)
            raise RuntimeError("the emulator did not start: %s" % err[-2000:])
        self.info = json.loads(line)
        self.ws = self.info["wireserver_port"]
        self.hgap = self.info["hostgaplugin_port"]
        self.imds = self.info["imds_port"]
        self.base = "http://127.0.0.1:%d" % self.ws

    def control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/_emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read(64 << 20))

    def state(self):
        return self.control("GET", "state")

    def faults(self, spec):
        return self.control("POST", "faults", spec)

    def reset(self):
        self.faults({})
        self.control("POST", "reset", {})

    def config(self, state_dir, **more):
        values = dict(Protocol__Endpoint="127.0.0.1:%d" % self.ws, Protocol__HostPluginPort=self.hgap,
                      Protocol__ImdsEndpoint="127.0.0.1:%d" % self.imds, Agent__StateDir=str(state_dir),
                      Protocol__HttpTimeout=1.0, Protocol__HttpAttempts=3, Protocol__RetryDelay=0.01,
                      Protocol__ThrottleDelay=0.01, Protocol__ThrottledAttempts=5,
                      Protocol__HealthReportAttempts=3, Protocol__HealthReportRetryDelay=0.01,
                      Protocol__GoalStateRetries=3, Protocol__GoalStateRetryDelay=0.01,
                      Protocol__DownloadTimeout=5.0, Protocol__DetectionAttempts=2,
                      Protocol__DetectionInterval=0.01, Protocol__MaxResponseBytes=1024 * 1024)
        values.update(more)
        return defaults().with_overrides(**values)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def start_emulator(args):
    return Emulator(args, ROOT)


@pytest.fixture(scope="module")
def emulator():
    emu = start_emulator(["--scenario", str(SCENARIO)])
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emu(emulator):
    emulator.reset()
    yield emulator
    emulator.faults({})


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every connection this test process opens must go to the loopback: anything else fails the
    test before a packet leaves (the fixtures name 168.63.129.16 and storage hosts)."""
    attempted = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        attempted.append(host)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK:
            raise AssertionError("connection attempted to %r" % (address,))
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempted
    outside = [h for h in attempted if h not in LOOPBACK]
    assert not outside, "connections outside the loopback: %s" % outside


@pytest.fixture
def wait_until():
    def wait(predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError("condition not met in %.1fs" % timeout)
    return wait


@pytest.fixture(scope="session")
def start_emulator_process():
    """start_emulator_process([serve args]) -> a started Emulator (stop it yourself)."""
    return start_emulator
