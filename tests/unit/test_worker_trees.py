"""supervisor/trees.py on this host's real cgroups (needs root: a writable v2 hierarchy, the
pure one or a hybrid host's unified one, and the v1 freezer where it is mounted), and its
parsing of mountinfo."""

import os
import signal
import time

import pytest

from supervisor import spawn, trees


def test_the_v2_mount_is_found_and_v1_ignored(tmp_path):
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.procs").write_text("")
    info = tmp_path / "mountinfo"
    info.write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "31 25 0:27 / %s rw,relatime shared:10 - cgroup2 cgroup2 rw\n" % v2)
    assert trees.find_hierarchy(str(info)) == str(v2)
    info.write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert trees.find_hierarchy(str(info)) is None
    freezer = tmp_path / "freezer"
    freezer.mkdir()
    (freezer / "cgroup.procs").write_text("")
    info.write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                    "32 25 0:28 / %s rw - cgroup cgroup rw,freezer\n" % freezer)
    assert trees.find_hierarchy(str(info)) == str(freezer)


def real_cgroup(name, hierarchy):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    own = trees.own_cgroup(hierarchy=hierarchy) if hierarchy else None
    if hierarchy is None or own is None or not os.access(hierarchy, os.F_OK):
        pytest.skip("no such writable cgroup hierarchy here")
    path = os.path.join(hierarchy + own.rstrip("/"), "%s.%d" % (name, os.getpid()))
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
        hierarchy = trees.find_hierarchy()
        if hierarchy and os.path.exists(os.path.join(hierarchy, "tasks")):
            hierarchy = None   # a v1-only host: that is the other case
    else:
        hierarchy = V1_FREEZER if os.path.exists(os.path.join(V1_FREEZER, "tasks")) else None
    path = real_cgroup("test-trees", hierarchy)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the "worker": in the cgroup, then a child that escapes the session
        try:
            spawn.enter_cgroup(path)
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
        assert trees.populated(path)
        assert set(pids) <= set(trees._procs(path))
        assert trees.kill_cgroup(path)
        assert not trees.populated(path)
        os.waitpid(pid, 0)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(alive(p) for p in pids)   # the orphan went to init, and died
        os.mkdir(os.path.join(path, "child"))
        assert trees.remove_cgroup(path)
        assert not os.path.exists(path)
    finally:
        for p in pids + [pid]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if os.path.isdir(path):
            trees.remove_cgroup(path)
