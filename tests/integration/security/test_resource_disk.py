"""Attacks on resource_disk.activate (issue 12): the verb takes no argument, and the broker
decides the device, the mount point and the swap file from waagent.conf and what it reads
itself. A worker that names a device or a mount point, a worker that is not provisioning, and
a second call in the same boot (after a worker restart or a supervisor restart) is answered
`skipped` and touches nothing; the disk a call would have touched is left as it was.

The supervisor runs in a private mount namespace of its own (unshare), so the mounts it makes
are seen only there (read through /proc/<pid>/mounts and /proc/<pid>/root)."""

import os
import subprocess

import pytest

from tests.integration import supervisor_harness as harness
from tests.integration.resource_disk.disk import loop_disk, vmbus_tree

ATTACKS = [
    {"device": "/dev/sda"},
    {"mount_point": "/etc"},
    {"device": "../../dev/vda", "mount_point": "/mnt/../etc"},
    {"swap_mb": 100000},
]


def start_in_own_mount_namespace(agent):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "GUESTAGENT_TEST_DIR": agent.test_dir}
    agent._stderr = open(agent.stderr_path, "ab")
    agent.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                   harness.GUESTAGENTD, "--config", agent.conf],
                                  stdin=subprocess.DEVNULL, stdout=agent._stderr,
                                  stderr=agent._stderr, env=environ)
    agent.wait_all_running()
    return agent


def mounts_of(pid):
    with open("/proc/%d/mounts" % pid) as f:
        return [line.split()[:2] for line in f]


@pytest.fixture
def disk_agent(make_agent, tmp_path):
    """A supervisor whose resource disk is a loop device found through a vmbus fixture tree,
    with its first every-boot run done (the disk mounted)."""
    with loop_disk(str(tmp_path)) as dev:
        sysroot = vmbus_tree(str(tmp_path / "sysroot"), dev)
        os.makedirs(os.path.join(sysroot, "proc/sys/kernel/random"))
        with open("/proc/sys/kernel/random/boot_id") as src, \
                open(os.path.join(sysroot, "proc/sys/kernel/random/boot_id"), "w") as dst:
            dst.write(src.read())
        agent = make_agent({"OS.SysRoot": sysroot, "ResourceDisk.Format": "y",
                            "ResourceDisk.Filesystem": "ext4"})
        mp = os.path.join(agent.dir, "resource")
        agent.write_conf({"OS.SysRoot": sysroot, "ResourceDisk.Format": "y",
                          "ResourceDisk.Filesystem": "ext4", "ResourceDisk.MountPoint": mp})
        start_in_own_mount_namespace(agent)
        harness.wait_for(lambda: "event=resource_disk_done" in agent.log("provisioning"), 60,
                         what="the resource disk's every-boot run")
        yield agent, dev, mp
        agent.stop()


def mounted_at(agent, mp):
    return [src for src, where in mounts_of(agent.proc.pid) if where == mp]


def test_the_worker_run_mounts_the_disk_the_broker_found(disk_agent):
    agent, dev, mp = disk_agent
    assert mounted_at(agent, mp) == ["/dev/%sp1" % dev], agent.log("provisioning")[-3000:]
    readme = "/proc/%d/root%s/DATALOSS_WARNING_README.txt" % (agent.proc.pid, mp)
    assert open(readme).read().startswith("WARNING: THIS IS A TEMPORARY DISK.")


@pytest.mark.parametrize("args", ATTACKS, ids=["device", "mount_point", "dotdot", "swap_size"])
def test_arguments_are_refused_and_end_the_worker(disk_agent, args):
    agent, dev, mp = disk_agent
    before = mounts_of(agent.proc.pid)
    records = agent.attack("provisioning", """
report("uid", os.getuid())
attempt("resource_disk.activate", %r)
""" % (args,))
    outcome = {r["key"]: r["value"] for r in records}.get("resource_disk.activate")
    assert outcome is None or outcome[0] == "closed", records
    assert records[-1]["key"] == "killed", records
    assert "event=security" in agent.log("supervisor")
    assert mounts_of(agent.proc.pid) == before


@pytest.mark.parametrize("worker", ["monitoring", "extensions", "logcollector"])
def test_other_workers_are_refused(disk_agent, worker):
    agent, dev, mp = disk_agent
    before = mounts_of(agent.proc.pid)
    records = agent.attack(worker, """
report("uid", os.getuid())
attempt("resource_disk.activate")
""")
    assert records[-1]["key"] == "killed", records
    assert mounts_of(agent.proc.pid) == before


def test_a_second_call_this_boot_touches_nothing_even_after_restarts(disk_agent):
    """The owner may repartition the disk after boot: no worker can make the broker touch it
    again this boot — not by calling again, not after its own restart or the supervisor's."""
    agent, dev, mp = disk_agent
    mine = "/proc/%d/root%s/owner-data" % (agent.proc.pid, mp)
    with open(mine, "w") as f:
        f.write("the owner's data\n")
    subprocess.run(["nsenter", "-t", str(agent.proc.pid), "-m", "umount", mp], check=True)
    records = agent.attack("provisioning", """
report("uid", os.getuid())
attempt("resource_disk.activate")
attempt("resource_disk.activate")
""")
    calls = [r["value"] for r in records if r["key"] == "resource_disk.activate"]
    assert [c[0] for c in calls] == ["ok", "ok"], records
    assert [c[1]["skipped"] for c in calls] == ["done already this boot"] * 2, records
    assert records[-1]["key"] == "done", records
    assert mounted_at(agent, mp) == []
    # The supervisor restarted (same boot): its record on disk still holds.
    agent.stop()
    start_in_own_mount_namespace(agent)
    harness.wait_for(lambda: "skipped='done already this boot'" in agent.log("provisioning"),
                     30, what="the provisioning worker's run after the supervisor's restart")
    assert mounted_at(agent, mp) == []
    subprocess.run(["nsenter", "-t", str(agent.proc.pid), "-m", "mount",
                    "/dev/%sp1" % dev, mp], check=True)
    mine = "/proc/%d/root%s/owner-data" % (agent.proc.pid, mp)
    assert open(mine).read() == "the owner's data\n"
