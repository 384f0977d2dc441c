"""The Ready debt is on disk before the marker is written and the gate closed.

A kill of the worker at the instant the broker writes the marker cannot be staged with real
processes (the window is a few microseconds), so the broker is played here by a stand-in
that answers `provisioning.finish` by looking at the worker's state folder and then killing
the run (an exception nothing catches, as SIGKILL would). A second, fresh run then reads
the state folder as the supervisor's retry would.
"""

import os

import pytest

import config
from workers.provisioning.job import READY_PENDING, Provisioning

VM_ID = "44454c4c-5000-1048-8051-b2c04f4d3132"


class Killed(BaseException):
    """The worker killed mid-verb (nothing in the job catches a BaseException)."""


class Broker:
    heartbeat_interval = 5.0

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.debt_on_disk_at_finish = None

    def tick(self):
        pass

    def status(self, text):
        pass

    def call(self, verb, args):
        if verb == "provisioning.finish":
            self.debt_on_disk_at_finish = os.path.exists(
                os.path.join(self.state_dir, "provisioning", READY_PENDING))
            raise Killed()   # the marker is written; the worker dies before anything else
        return {}, []


@pytest.fixture
def conf(tmp_path):
    os.mkdir(tmp_path / "provisioning", 0o700)
    return config.parse("Agent.StateDir=%s\nOS.SysRoot=%s\n" % (tmp_path, tmp_path / "root"))


@pytest.mark.parametrize("disable_agent", [False, True])
def test_a_kill_as_the_marker_is_written_leaves_the_ready_owed(conf, tmp_path, disable_agent):
    broker = Broker(str(tmp_path))
    with pytest.raises(Killed):
        Provisioning(broker, conf).close(VM_ID, disable_agent=disable_agent)
    assert broker.debt_on_disk_at_finish is True
    # The supervisor's retry (a new process) finds the debt and pays it.
    assert Provisioning(Broker(str(tmp_path)), conf).owed_ready() == VM_ID


def test_no_marker_when_the_debt_cannot_be_noted(conf, tmp_path):
    """A debt that cannot be written (here a folder in its place) stops the run before the
    marker: better provisioned again than provisioned and never Ready."""
    os.mkdir(tmp_path / "provisioning" / READY_PENDING)
    broker = Broker(str(tmp_path))
    from workers.provisioning.job import StepFailed
    with pytest.raises(StepFailed, match="owe_ready"):
        Provisioning(broker, conf).close(VM_ID)
    assert broker.debt_on_disk_at_finish is None   # finish never called
