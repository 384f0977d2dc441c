"""A compromised worker against the per-boot verbs (boot.*, supervisor/privileged/boot.py).

The real supervisor and real workers (tests/integration/supervisor_harness.py; SCVMM in a
confined host, emulator/confinement.py, because it mounts the media), the worker's code
replaced by an attack script under its own uid on its own channel. Every boot verb takes no
argument: whatever a worker sends is a violation, and what the broker does comes from
waagent.conf and the OS.SysRoot tree it reads itself, which holds the worst files a root
tree can: links to files the broker must not write, FIFOs it must not block on.
"""

import os
import stat

import pytest

from tests.integration.provisioning.conftest import make_host  # noqa: F401
from tests.integration.security.test_provisioning_attacks import (Attacked, outcomes,
                                                                   refused)

OEM0 = bytes(range(64))
VERBS = ("boot.scsi_timeouts", "boot.entropy", "boot.numa", "boot.wireserver_route",
         "boot.persistent_net_rules", "boot.publish_hostname", "boot.scvmm")


def put(path, data=b"", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def sysroot(base):
    """A root-owned OS.SysRoot with a victim behind every link."""
    root = os.path.join(base, "sysroot")
    victim = put(os.path.join(base, "victim"), b"keep\n", 0o600)
    for disk in ("sda", "sdb"):
        put(os.path.join(root, "sys/block", disk, "device/timeout"), b"30\n")
    os.makedirs(os.path.join(root, "sys/block/sdc/device"))
    os.symlink(victim, os.path.join(root, "sys/block/sdc/device/timeout"))
    os.makedirs(os.path.join(root, "sys/firmware/acpi/tables"))
    os.mkfifo(os.path.join(root, "sys/firmware/acpi/tables/OEM0"))
    put(os.path.join(root, "dev/random"))
    put(os.path.join(root, "lib/udev/rules.d/75-persistent-net-generator.rules"), b"# gen\n")
    os.makedirs(os.path.join(root, "etc/udev/rules.d"))
    os.symlink(victim, os.path.join(root, "etc/udev/rules.d/70-persistent-net.rules"))
    return root, victim


@pytest.fixture
def tree_agent(make_agent):
    a = make_agent()
    # The tree is made once the agent is up: the provisioning worker's own per-boot steps at
    # start find nothing, and the attack meets the tree as built.
    a.write_conf({"OS.SysRoot": os.path.join(a.dir, "sysroot"),
                  "OS.RootDeviceScsiTimeout": "300"})
    a.start()
    a.root, a.victim = sysroot(a.dir)
    return a


def by_key(records):
    out = {}
    for r in records:
        out.setdefault(r["key"], []).append(r["value"])
    return out


def test_arguments_to_a_boot_verb_are_a_violation_and_nothing_is_written(tree_agent):
    a = tree_agent
    records = a.attack("provisioning", """
report("uid", os.getuid())
attempt("boot.scsi_timeouts", {"timeout": 1, "devices": ["../../../etc/shadow"]})
""")
    assert records[-1]["key"] == "killed", records
    assert "event=security" in a.log("supervisor")
    assert open(a.victim, "rb").read() == b"keep\n"
    for disk in ("sda", "sdb"):
        assert open(os.path.join(a.root, "sys/block", disk, "device/timeout")).read() == "30\n"


def test_the_broker_writes_its_own_timeout_never_through_a_link_and_only_once(tree_agent):
    a = tree_agent
    records = a.attack("provisioning", """
report("uid", os.getuid())
attempt("boot.scsi_timeouts")
attempt("boot.scsi_timeouts")
""")
    got = by_key(records)
    assert got["boot.scsi_timeouts"][0] == ["ok", {"timeout": 300, "devices": ["sda", "sdb"]}]
    assert refused(got["boot.scsi_timeouts"][1] if len(got["boot.scsi_timeouts"]) > 1
                   else ["killed"])
    assert records[-1]["key"] == "killed", records      # a second call is a violation
    assert open(a.victim, "rb").read() == b"keep\n"
    assert open(os.path.join(a.root, "sys/block/sda/device/timeout")).read() == "300\n"


def test_a_fifo_for_oem0_is_an_answer_not_a_hung_broker(tree_agent):
    a = tree_agent
    records = a.attack("provisioning", """
report("uid", os.getuid())
attempt("boot.entropy", timeout=10)
attempt("provisioning.state", timeout=10)
""")
    got = by_key(records)
    assert got["boot.entropy"][0][:2] == ["error", "FAILED"], got
    assert "not a regular file" in got["boot.entropy"][0][2]
    assert got["provisioning.state"][0][0] == "ok"
    assert records[-1]["key"] == "done"
    assert os.path.getsize(os.path.join(a.root, "dev/random")) == 0


def test_net_rules_links_are_moved_never_followed(tree_agent):
    a = tree_agent
    records = a.attack("provisioning", """
report("uid", os.getuid())
attempt("boot.persistent_net_rules")
""")
    got = by_key(records)
    assert got["boot.persistent_net_rules"][0][0] == "ok", got
    lib = os.path.join(a.dir, "lib")
    assert os.readlink(os.path.join(lib, "70-persistent-net.rules")) == a.victim
    st = os.lstat(os.path.join(lib, "75-persistent-net-generator.rules"))
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0
    assert open(a.victim, "rb").read() == b"keep\n"
    assert stat.S_IMODE(os.stat(a.victim).st_mode) == 0o600


@pytest.mark.parametrize("worker", ["extensions", "logcollector"])
def test_no_other_worker_may_call_a_boot_verb(tree_agent, worker):
    a = tree_agent
    records = a.attack(worker, """
report("uid", os.getuid())
attempt("boot.persistent_net_rules")
""")
    assert records[-1]["key"] == "killed", records
    assert os.path.islink(os.path.join(a.root, "etc/udev/rules.d/70-persistent-net.rules"))
    assert a.worker("provisioning")["state"] != "FATAL"


# ---- monitoring: the periodic OS checks and the hostname monitor (issue 14) ----------------

@pytest.mark.parametrize("verb", ["boot.entropy", "boot.numa", "boot.scvmm"])
def test_monitoring_may_not_call_a_boot_only_verb(tree_agent, verb):
    a = tree_agent
    records = a.attack("monitoring", """
report("uid", os.getuid())
attempt(%r)
""" % verb)
    assert records[-1]["key"] == "killed", records
    assert "event=security" in a.log("supervisor")
    assert os.path.getsize(os.path.join(a.root, "dev/random")) == 0


def test_monitoring_repeats_an_os_check_as_the_broker_decides_and_no_faster(tree_agent):
    """The monitoring worker may ask for the SCSI timeouts and the net rules again — the
    broker's values, never through a link — but a call sooner than half its period is a
    violation (a flood of root writes is not a worker's to start), and so are arguments."""
    a = tree_agent
    records = a.attack("monitoring", """
report("uid", os.getuid())
attempt("boot.scsi_timeouts")
attempt("boot.persistent_net_rules")
attempt("boot.scsi_timeouts")
""")
    got = by_key(records)
    assert got["uid"] != [0]
    assert got["boot.scsi_timeouts"][0] == ["ok", {"timeout": 300, "devices": ["sda", "sdb"]}]
    assert got["boot.persistent_net_rules"][0][0] == "ok", got
    assert records[-1]["key"] == "killed", records      # the second scsi call, too soon
    assert "allows one call per 15.0 s" in a.log("supervisor")
    assert open(a.victim, "rb").read() == b"keep\n"
    assert open(os.path.join(a.root, "sys/block/sda/device/timeout")).read() == "300\n"
    assert os.readlink(os.path.join(a.dir, "lib", "70-persistent-net.rules")) == a.victim
    records = a.attack("monitoring", """
report("uid", os.getuid())
attempt("boot.wireserver_route", {"via": "10.0.0.1"})
""")
    assert records[-1]["key"] == "killed", records


def test_the_monitor_cannot_make_the_broker_publish_a_hostname(tree_agent):
    """What is published, and whether, is the broker's: the kernel's name against its own
    record (Lib.Dir/published_hostname, root's). The first call takes the name as published;
    a worker asking again gets no publication; only a record that differs makes the broker
    try (here it refuses: OS.SysRoot is a fixture, the network is not that root's)."""
    import socket
    a = tree_agent
    record = os.path.join(a.dir, "lib", "published_hostname")
    assert not os.path.exists(record)
    script = """
report("uid", os.getuid())
attempt("boot.publish_hostname")
"""
    got = by_key(a.attack("monitoring", script))
    name = socket.gethostname()
    assert got["boot.publish_hostname"][0] == ["ok", {
        "hostname": name, "interface": None, "acked": False, "published": False}], got
    st = os.stat(record)
    assert (st.st_uid, open(record).read()) == (0, name)
    got = by_key(a.attack("monitoring", script))      # a new process: no record of its own
    assert got["boot.publish_hostname"][0][1]["published"] is False, got
    got = by_key(a.attack("monitoring", """
report("uid", os.getuid())
attempt("boot.publish_hostname", {"hostname": "evil"})
"""))
    assert "boot.publish_hostname" not in got or refused(got["boot.publish_hostname"][0])
    with open(record, "w") as f:                      # the broker's record says otherwise
        f.write("older-name")
    got = by_key(a.attack("monitoring", script))
    assert got["boot.publish_hostname"][0][:2] == ["error", "FAILED"], got
    assert "OS.SysRoot is not /" in got["boot.publish_hostname"][0][2]
    assert open(record).read() == "older-name"


def test_the_route_and_the_hostname_are_not_a_workers_to_choose(tree_agent):
    """Pointed at another endpoint and at a fixture root, the broker touches no network,
    whatever the worker wants."""
    a = tree_agent
    records = a.attack("provisioning", """
report("uid", os.getuid())
attempt("boot.wireserver_route")
attempt("boot.publish_hostname")
""")
    got = by_key(records)
    assert got["boot.wireserver_route"][0] == ["ok", {
        "added": False, "reason": "Protocol.Endpoint is 127.0.0.1"}]
    assert got["boot.publish_hostname"][0][:2] == ["error", "FAILED"]
    assert "OS.SysRoot is not /" in got["boot.publish_hostname"][0][2]


# ---- SCVMM: the installer as root, once per boot, from bytes the broker read ---------------
INSTALLER = b"""#!/bin/bash
echo "$(id -u) $*" >> %s
"""


SCVMM_AGAIN = """
report("uid", os.getuid())
attempt("boot.scvmm", timeout=60)
"""


@pytest.fixture
def scvmm_host(make_host):  # noqa: F811
    def make(detect="y"):
        a = Attacked(make_host({"Agent.TestHooks": "y", "DetectScvmmEnv": detect}))
        a.ran = a.host.path("scvmm-ran")
        put(os.path.join(a.host.media, "linuxosconfiguration.xml"), b"<xml/>")
        put(os.path.join(a.host.media, "install"), INSTALLER % a.ran.encode(), 0o755)
        return a
    return make


def test_the_scvmm_installer_runs_once_per_boot_even_across_restarts(scvmm_host):
    a = scvmm_host()
    got = outcomes(a.run("""
report("uid", os.getuid())
attempt("boot.scvmm", timeout=60)
"""))
    assert got["boot.scvmm"][0] == ["ok", {"found": True, "exit_code": 0}], got
    lines = open(a.ran).read().splitlines()
    assert len(lines) == 1 and lines[0].startswith("0 -p "), lines
    # A replay from a new worker process (after a crash), then after a supervisor restart,
    # in the same boot: refused, the installer not run again.
    a.arm(SCVMM_AGAIN)
    a.agentctl("start", "provisioning")
    assert refused(outcomes(a.wait())["boot.scvmm"][0])
    a.host.stop()
    a.arm(SCVMM_AGAIN)
    a.start()
    assert refused(outcomes(a.wait())["boot.scvmm"][0])
    assert len(open(a.ran).read().splitlines()) == 1
    assert a.supervisor_alive()


def test_scvmm_off_runs_nothing_whatever_the_worker_asks(scvmm_host):
    a = scvmm_host(detect="n")
    got = outcomes(a.run("""
report("uid", os.getuid())
attempt("boot.scvmm", timeout=60)
"""))
    assert got["boot.scvmm"][0] == ["ok", {"found": False, "exit_code": None}], got
    assert not os.path.exists(a.ran)
