"""Routine verbs (issue 13's idle CPU): a verb a worker calls on every poll or period
(`routine=True` in its declaration: extensions.read_status, the periodic boot.* OS checks) has
its call logged at DEBUG, and the SCSI check says the same outcome once. Quieter must not mean
blinder: a real worker process under its own uid, its code replaced by the attack, floods them,
calls them too soon and with the worst arguments — each is still a violation, logged as one at
the level an operator reads, and a failure to write is still said every time."""

import os

import pytest

from tests.integration.security.test_boot_tweaks import by_key, sysroot
from tests.integration.security.test_extension_verbs import attacked  # noqa: F401


def quiet_verb_lines(log, worker, verb):
    return log.count("event=verb worker=%s verb=%s " % (worker, verb))


def test_a_flood_of_the_status_read_is_a_violation_though_its_calls_are_not_logged(attacked):  # noqa: F811
    a = attacked
    before = a.worker("monitoring")["pid"]
    records = a.attack("extensions", """
report("uid", os.getuid())
import time
t = time.monotonic()
while time.monotonic() - t < 10:
    attempt("extensions.read_status", {"name": "Test.Good", "version": "1.0.0", "seq": 0,
                                       "extension": None})
""", timeout=40)
    assert records[0]["value"] != 0, records[0]
    assert records[-1]["key"] == "killed", records[-3:]
    refused = [r["value"] for r in records if r["key"] == "extensions.read_status"]
    assert len(refused) > 100 and all(v[:2] == ["error", "FAILED"] for v in refused), refused[:3]
    log = a.log("supervisor")
    assert "event=security worker=extensions" in log and "FLOOD" in log, log[-2000:]
    # Hundreds of routine calls, not one line each at INFO: the violation is what is said.
    assert quiet_verb_lines(log, "extensions", "extensions.read_status") == 0
    w = a.worker("monitoring")
    assert (w["state"], w["pid"]) == ("RUNNING", before), w


@pytest.mark.parametrize("args", [
    {"name": "../../etc", "version": "1.0.0", "seq": 0, "extension": None},
    {"name": "Test.Good", "version": "../..", "seq": 0, "extension": None},
    {"name": "Test.Good", "version": "1.0.0", "seq": -1, "extension": None},
    {"name": "Test.Good", "version": "1.0.0", "seq": 0, "extension": "../../../root/.ssh"},
    {"name": "Test.Good", "version": "1.0.0", "seq": 0, "extension": None, "path": "/etc/shadow"},
])
def test_the_status_read_with_the_worst_arguments_is_a_violation(attacked, args):  # noqa: F811
    records = attacked.attack("extensions", """
report("uid", os.getuid())
attempt("extensions.read_status", %r)
""" % (args,))
    assert records[-1]["key"] == "killed", records
    log = attacked.log("supervisor")
    assert "event=security worker=extensions" in log, log[-2000:]
    assert "shadow" not in attacked.log("extensions")


@pytest.fixture
def periodic_agent(make_agent):
    a = make_agent()
    a.write_conf({"OS.SysRoot": os.path.join(a.dir, "sysroot"),
                  "OS.RootDeviceScsiTimeout": "300", "OS.RootDeviceScsiTimeoutPeriod": "1"})
    a.start()
    a.root, a.victim = sysroot(a.dir)   # sda, sdb regular files; sdc's a link to the victim
    fifo = os.path.join(a.root, "sys/block/sdb/device/timeout")
    os.unlink(fifo)
    os.mkfifo(fifo)                       # a FIFO the broker must not block on
    return a


def test_a_routine_os_check_still_says_each_failure_and_its_flood_is_a_violation(periodic_agent):
    a = periodic_agent
    records = a.attack("monitoring", """
report("uid", os.getuid())
import time
for _ in range(3):
    attempt("boot.scsi_timeouts")
    time.sleep(0.7)                        # the period is 1 s: one call per 0.5 s is allowed
attempt("boot.scsi_timeouts")
attempt("boot.scsi_timeouts")              # too soon: a violation
""")
    got = by_key(records)
    assert got["uid"] != [0]
    assert got["boot.scsi_timeouts"][:4] == [["ok", {"timeout": 300, "devices": ["sda"]}]] * 4
    assert records[-1]["key"] == "killed", records
    log = a.log("supervisor")
    # Nothing written through the link or into the FIFO; the file the broker may write, written.
    assert open(a.victim, "rb").read() == b"keep\n"
    assert open(os.path.join(a.root, "sys/block/sda/device/timeout")).read() == "300\n"
    # Each refused write is said every time (a failure is never a repeat to hide) ...
    assert log.count("event=scsi_timeout_failed device=sdb") == 4, log[-3000:]
    assert log.count("event=scsi_timeout_failed device=sdc") == 4
    # ... the same outcome once, the calls not at all, the flood as a violation.
    assert log.count("event=scsi_timeouts timeout=300 devices=sda failed=sdb,sdc") == 1
    assert quiet_verb_lines(log, "monitoring", "boot.scsi_timeouts") == 0
    assert "event=security worker=monitoring" in log and "allows one call per 0.5 s" in log
