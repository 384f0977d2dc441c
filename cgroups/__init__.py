"""Cgroup machinery: find where a process may make cgroups, move into one, kill one whole
(cgroup v2, or the v1 freezer) and remove it. The standard library only: the reaper runs it
without site-packages (reaper/__init__.py).

A cgroup holds a process tree whatever it does with sessions and double forks, and an
unprivileged process cannot write a root-owned `cgroup.procs` to leave it. Killing one is a
write to `cgroup.kill` (Linux 5.14; before that every pid in `cgroup.procs` until it is
empty), atomic against a fork bomb; a v1 freezer cgroup is frozen, killed, thawed.
"""

import errno
import os
import signal
import time

KILL_WAIT = 2.0   # seconds for a killed cgroup to empty (SIGKILL: a few ms)


def kill_cgroup(path: str, wait: float = KILL_WAIT) -> bool:
    """SIGKILL everything in the cgroup `path` and wait until it is empty; True if it is."""
    if os.path.exists(os.path.join(path, "freezer.state")):
        return _kill_frozen(path, wait)
    try:
        write(os.path.join(path, "cgroup.kill"), "1")
    except FileNotFoundError:
        if not os.path.isdir(path):
            return True
        kill_listed(path)   # a kernel before 5.14: no cgroup.kill
    except OSError:
        kill_listed(path)
    deadline = time.monotonic() + wait
    while True:
        if not populated(path):
            return True
        if time.monotonic() > deadline:
            return False
        kill_listed(path)
        time.sleep(0.005)


def populated(path: str) -> bool:
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            for line in f:
                if line.startswith("populated "):
                    return line.split()[1] != "0"
    except OSError:
        pass   # v1 has no cgroup.events; a removed cgroup lists nothing
    return bool(procs(path))


def _kill_frozen(path: str, wait: float) -> bool:
    """cgroup v1: freeze (nothing forks any more), SIGKILL every member, thaw (a frozen task
    dies only when thawed), until empty."""
    deadline = time.monotonic() + wait
    while True:
        try:
            write(os.path.join(path, "freezer.state"), "FROZEN")
        except FileNotFoundError:
            return True
        except OSError:
            pass
        while time.monotonic() < deadline:   # FREEZING until every task has stopped
            try:
                with open(os.path.join(path, "freezer.state")) as f:
                    if f.read().strip() == "FROZEN":
                        break
            except OSError:
                break
            time.sleep(0.002)
        kill_listed(path)
        try:
            write(os.path.join(path, "freezer.state"), "THAWED")
        except OSError:
            pass
        time.sleep(0.005)
        if not procs(path):
            return True
        if time.monotonic() > deadline:
            return False


def remove_cgroup(path: str) -> bool:
    """Kill what is left in `path` and remove it (children first); True when it is gone."""
    try:
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    except OSError:
        children = []
    for child in children:
        remove_cgroup(child)
    kill_cgroup(path)
    deadline = time.monotonic() + KILL_WAIT
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            # EBUSY for a moment after the last task or child cgroup went: the kernel
            # takes them offline asynchronously.
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(0.01)


def procs(path: str):
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def kill_listed(path: str) -> None:
    for pid in procs(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def mounts(mountinfo: str = "/proc/self/mountinfo"):
    """The cgroup mounts: (v2 mount points, {v1 controller: its mount point}). OSError if
    mountinfo cannot be read."""
    v2, v1 = [], {}
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-")
            except ValueError:
                continue
            if fields[sep + 1] == "cgroup2":
                v2.append(fields[4])
            elif fields[sep + 1] == "cgroup":
                for controller in fields[sep + 3].split(","):
                    v1.setdefault(controller, fields[4])
    return v2, v1


def find_hierarchy(mountinfo: str = "/proc/self/mountinfo"):
    """The mount point of a writable cgroup v2 hierarchy (the pure one at /sys/fs/cgroup
    first, else a hybrid host's unified one), else the v1 freezer's; None: none we may write."""
    try:
        v2, v1 = mounts(mountinfo)
    except OSError:
        return None
    freezer = [v1["freezer"]] if "freezer" in v1 else []
    for mount in sorted(v2, key=lambda m: (m != "/sys/fs/cgroup", m)) + freezer:
        if os.access(os.path.join(mount, "cgroup.procs"), os.W_OK):
            return mount
    return None


def own_cgroup(pid: str = "self", hierarchy=None, controller: str = "freezer"):
    """The path of `pid` in `hierarchy` (v1 `controller`'s, or v2 when None or a v2 mount)."""
    v1 = hierarchy is not None and os.path.exists(os.path.join(hierarchy, "tasks"))  # v2: none
    try:
        with open("/proc/%s/cgroup" % pid) as f:
            for line in f:
                num, controllers, path = line.rstrip("\n").split(":", 2)
                if v1 and controller in controllers.split(","):
                    return path
                if not v1 and num == "0" and controllers == "":
                    return path
    except (OSError, ValueError):
        pass
    return None


def enter_cgroup(cgroup: str) -> None:
    """Move the calling process into `cgroup` (its cgroup.procs)."""
    write(os.path.join(cgroup, "cgroup.procs"), str(os.getpid()))


def kill_tree(cgroup: str) -> None:
    """SIGKILL every member of `cgroup` now, without waiting."""
    try:
        write(os.path.join(cgroup, "cgroup.kill"), "1")
    except OSError:
        kill_listed(cgroup)
