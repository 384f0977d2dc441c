"""The emulator as a real process on 127.0.0.1, and a guard that fails any connection elsewhere."""

import functools
import pathlib
import socket
import time

import pytest

from config import defaults
from emulator import confinement

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "emulator" / "scenarios" / "default.json"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Emulator(confinement.Emulator):
    """The emulator process (emulator/confinement.py) with a client Config for these tests."""

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


@functools.lru_cache(maxsize=None)
def made_transport():
    """A transport pair made by the broker's key maker (supervisor/privileged/transport_key.py),
    handed to the client in memory as the broker's descriptor would be: these tests run the
    client without a supervisor (tests/integration/security/test_secrets.py runs it with one)."""
    from supervisor.privileged import transport_key
    from workers.platform.certificates import TransportCredentials
    return TransportCredentials(*transport_key.generate())


def start_emulator(args):
    return Emulator(args=args)


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
