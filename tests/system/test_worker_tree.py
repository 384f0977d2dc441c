"""A worker is its whole process tree, under systemd (issue 10 §5): each worker in a cgroup of
its own under the unit's (Delegate=yes), so a descendant that left the worker's session and
process group still ends with the worker, and with the supervisor when it is killed.

Runs after test_boot.py on the same VM (agent_vm) and leaves guestagent.service running.
The "descendant" is placed in the worker's cgroup by root, as the worker's own child would
be born there, then drops to the worker's uid and leaves the session (setsid)."""

import time

import pytest

from tests.system.test_boot import READY_TIMEOUT, show, status, wait_active

pytestmark = pytest.mark.system

UNIT_CG = "/sys/fs/cgroup/guestagent.slice/guestagent.service"


def worker_cgroup(vm, name):
    return f"{UNIT_CG}/guestagent.{show(vm, 'MainPID')['MainPID']}/{name}"


def plant(vm, cgroup, marker):
    """A process in `cgroup`, as guestagent-mon, in a session of its own, that never exits on
    its own; its argv carries `marker` so it can be found (pgrep's pattern brackets the
    marker so the shell running pgrep, whose command line names it, does not match)."""
    vm.run(f"nohup sh -c 'echo $$ > {cgroup}/cgroup.procs && exec setpriv --reuid=guestagent-mon"
           f" --regid=guestagent-wire --clear-groups setsid sleep 100{marker}' "
           ">/dev/null 2>&1 &", check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = vm.run(f"pgrep -f 'sleep 100[{marker}]'")
        if r.out.strip():
            return r.out.split()[0]
        time.sleep(0.5)
    pytest.fail("the planted process did not start")


def gone(vm, marker, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not vm.run(f"pgrep -f 'sleep 100[{marker}]'").out.strip():
            return True
        time.sleep(0.5)
    return False


def test_a_descendant_in_another_session_ends_with_its_worker(agent_vm):
    wait_active(agent_vm)
    pid = status(agent_vm)["monitoring"]["pid"]
    cgroup = worker_cgroup(agent_vm, "monitoring")
    planted = plant(agent_vm, cgroup, "1")
    assert planted in agent_vm.run(f"cat {cgroup}/cgroup.procs", check=True).out.split()
    agent_vm.run(f"kill -9 {pid}", check=True)
    assert gone(agent_vm, "1"), agent_vm.run(f"cat {cgroup}/cgroup.procs").out
    # The worker comes back, in a fresh cgroup of the same name.
    deadline = time.monotonic() + READY_TIMEOUT
    while status(agent_vm)["monitoring"]["state"] != "RUNNING" or \
            status(agent_vm)["monitoring"]["pid"] == pid:
        assert time.monotonic() < deadline, status(agent_vm)
        time.sleep(2)


def test_kill9_of_the_supervisor_leaves_no_worker_descendant(agent_vm):
    """Under systemd no reaper runs (supervisor/trees.py): emptying the unit's cgroup is
    systemd's (KillMode=mixed), and this is the proof that it does."""
    wait_active(agent_vm)
    procs = agent_vm.run(f"cat {UNIT_CG}/cgroup.procs {UNIT_CG}/*/*/cgroup.procs "
                         "| xargs -n1 -I{} cat /proc/{}/cmdline | tr '\\0' ' '; echo",
                         check=True).out
    assert "supervisor" in procs and "reaper" not in procs, procs
    planted = plant(agent_vm, worker_cgroup(agent_vm, "extensions"), "2")
    before = show(agent_vm, "MainPID", "NRestarts")
    agent_vm.run("systemctl kill --kill-whom=main -s SIGKILL guestagent.service", check=True)
    assert gone(agent_vm, "2"), planted
    # systemd restarts the service (Restart=always), with new worker cgroups.
    deadline = time.monotonic() + READY_TIMEOUT
    while show(agent_vm, "MainPID")["MainPID"] in ("0", before["MainPID"]):
        assert time.monotonic() < deadline
        time.sleep(2)
    wait_active(agent_vm)
    assert int(show(agent_vm, "NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1
    r = agent_vm.run(f"ls -d {UNIT_CG}/guestagent.{before['MainPID']} 2>/dev/null")
    assert not r.out.strip(), "the killed supervisor's worker cgroups remain"
