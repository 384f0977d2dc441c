"""supervisor/trees.py on this host's real cgroups (needs root: a writable v2 hierarchy, the
pure one or a hybrid host's unified one, and the v1 freezer where it is mounted), and its
parsing of mountinfo."""

import os
import signal
import time

import pytest

import cgroups


def test_the_v2_mount_is_found_and_v1_ignored(tmp_path):
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.procs").write_text("")
    info = tmp_path / "mountinfo"
    info.write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "31 25 0:27 / %s rw,relatime shared:10 - cgroup2 cgroup2 rw\n" % v2)
    assert cgroups.find_hierarchy(str(info)) == str(v2)
    info.write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert cgroups.find_hierarchy(str(info)) is None
    freezer = tmp_path / "freezer"
    freezer.mkdir()
    (freezer / "cgroup.procs").write_text("")
    info.write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                    "32 25 0:28 / %s rw - cgroup cgroup rw,freezer\n" % freezer)
    assert cgroups.find_hierarchy(str(info)) == str(freezer)


def real_cgroup(name, hierarchy, suffix=""):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    own = cgroups.own_cgroup(hierarchy=hierarchy) if hierarchy else None
    if hierarchy is None or own is None or not os.access(hierarchy, os.F_OK):
        pytest.skip("no such writable cgroup hierarchy here")
    path = os.path.join(hierarchy + own.rstrip("/"), "%s.%d%s" % (name, os.getpid(), suffix))
    os.mkdir(path)
    return path


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


V1_FREEZER = "/sys/fs/cgroup/freezer"


@pytest.mark.parametrize("version", ["v2", "v1 freezer"])
def test_kill_cgroup_ends_a_tree_that_left_its_session_and_remove_cleans_up(version):
    if version == "v2":
        hierarchy = cgroups.find_hierarchy()
        if hierarchy and os.path.exists(os.path.join(hierarchy, "tasks")):
            hierarchy = None   # a v1-only host: that is the other case
    else:
        hierarchy = V1_FREEZER if os.path.exists(os.path.join(V1_FREEZER, "tasks")) else None
    path = real_cgroup("test-trees", hierarchy)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the "worker": in the cgroup, then a child that escapes the session
        try:
            cgroups.enter_cgroup(path)
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.write(w, b"%8d" % os.getpid())
                    time.sleep(60)
                os._exit(0)
            os.write(w, b"%8d" % os.getpid())
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while len(data) < 16:
        data += os.read(r, 16 - len(data))
    pids = [int(data[:8]), int(data[8:])]
    try:
        assert cgroups.populated(path)
        assert set(pids) <= set(cgroups.procs(path))
        assert cgroups.kill_cgroup(path)
        assert not cgroups.populated(path)
        os.waitpid(pid, 0)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(alive(p) for p in pids)   # the orphan went to init, and died
        os.mkdir(os.path.join(path, "child"))
        assert cgroups.remove_cgroup(path)
        assert not os.path.exists(path)
    finally:
        for p in pids + [pid]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if os.path.isdir(path):
            cgroups.remove_cgroup(path)


FALLBACK = r"""
import json, logging, os, sys, time
import launch
from supervisor import trees
launch.set_child_subreaper()                    # as the supervisor is
t = trees.Trees(logging.getLogger("t"), hierarchy=None)
t.uids["w"] = 65534
r, w = os.pipe()
pid = os.fork()
if pid == 0:                                   # the worker, under its own uid
    os.setsid()
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    if os.fork() == 0:                         # C: leaves the group, stays
        os.setsid()
        if os.fork() == 0:                     # G: C's child, in C's session
            os.write(w, b"%8d" % os.getpid())
            time.sleep(60)
        os.write(w, b"%8d" % os.getpid())
        time.sleep(60)
    if os.fork() == 0:                         # D: double fork, orphaned at once
        os.setsid()
        if os.fork() == 0:
            os.write(w, b"%8d" % os.getpid())
            time.sleep(60)
        os._exit(0)
    time.sleep(0.2)
    os._exit(0)                                # the worker ends, its tree does not
os.close(w)
data = b""
while len(data) < 24:
    data += os.read(r, 24 - len(data))
pids = [int(data[i:i + 8]) for i in range(0, 24, 8)]
os.waitpid(pid, 0)
t.ended("w", pid)
time.sleep(0.1)
t.reap_adopted(set())
alive = []
for p in pids:
    try:
        with open("/proc/%d/stat" % p) as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(p)
    except OSError:
        pass
print(json.dumps(alive))
"""


def test_without_cgroups_the_orphans_of_an_ended_worker_are_killed():
    """The fallback (no writable cgroupfs): the supervisor, a subreaper, kills the adopted
    orphans that run under the ended worker's uid, rounds until none is left. In a process
    of its own (the subreaper bit would stick to pytest)."""
    import json
    import subprocess
    import sys
    if os.geteuid() != 0:
        pytest.skip("needs root (a worker uid)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", FALLBACK], cwd=root, capture_output=True,
                         text=True, timeout=30, env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [], out.stdout


UNDER_A_SERVICE = r"""
import json, logging, os, sys
import cgroups, launch
from supervisor import trees
unit = sys.argv[1]
with open(os.path.join(unit, "cgroup.procs"), "w") as f:   # as systemd starts a service
    f.write(str(os.getpid()))
t = trees.Trees(logging.getLogger("t"), hierarchy=sys.argv[2])
t.open()
pid = t.reaper_pid
alive = pid is not None and os.path.exists("/proc/%d" % pid)
t.close()
print(json.dumps({"base": t.base, "reaper": alive}))
"""


@pytest.mark.parametrize("invocation_id", ["", "0123456789abcdef0123456789abcdef"])
def test_under_a_systemd_service_the_unit_cgroup_replaces_the_reaper(invocation_id):
    """Started by systemd (INVOCATION_ID) in a service's cgroup, the worker cgroups are made
    inside it and no reaper runs: systemd kills what is left when the supervisor dies
    (proven in the VM: tests/system/test_worker_tree.py). Anywhere else the reaper runs."""
    import json
    import subprocess
    import sys
    hierarchy = cgroups.find_hierarchy()
    unit = real_cgroup("test-unit", hierarchy, suffix=".service")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    if invocation_id:
        env["INVOCATION_ID"] = invocation_id
    try:
        out = subprocess.run([sys.executable, "-c", UNDER_A_SERVICE, unit, hierarchy], cwd=root,
                             capture_output=True, text=True, timeout=30,
                             env=dict(env, PYTHONPATH=root))
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.splitlines()[-1])
        assert got["base"] and got["base"].startswith(unit + "/guestagent."), got
        assert got["reaper"] is not bool(invocation_id), got
    finally:
        cgroups.remove_cgroup(unit)
