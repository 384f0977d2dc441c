"""A worker with CPU and memory limits of its own (the log collector, issue 15).

Under systemd it runs in a transient scope of its slice, as waagent's collector does:
`systemd-run --scope --slice=<slice> -p CPUQuota= -p MemoryMax= -- <python> -I -m spawner.drop
UID GID PID -- <python> -I -m <module>`; the spawn child (launch/) sets up its
descriptors and session and stays root, systemd-run execs in place into the scope, and
spawner.drop drops privileges with the supervisor's own code (systemd-run's --uid would keep
root's supplementary groups).

Without systemd the supervisor makes the cgroups: on cgroup v1, `<slice>` folders under our
own cgroup of the memory and cpu controllers (memory.limit_in_bytes, cpu.cfs_quota_us); on
v2, memory.max and cpu.max on the worker's own cgroup of supervisor/trees.py, its parent's
controllers enabled. The spawn child enters them while still root, so the worker cannot leave.
A limit that cannot be set is logged and the worker runs without it: its own memory watch
(workers/logcollector/memory.py) still ends the collection in time.
"""

import itertools
import logging
import os
import shutil
from typing import Optional, Tuple

from cgroups import mounts as cgroup_mounts

log = logging.getLogger("guestagent.slices")

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_RUNS = itertools.count(1)
CFS_PERIOD = 100000


def limited(spec) -> bool:
    return spec.name == "logcollector" and spec.slice is not None


def under_systemd() -> bool:
    return os.path.isdir("/run/systemd/system") and \
        shutil.which("systemd-run", path=SAFE_PATH) is not None


def scope_wrapper(spec, conf, identity, python: str) -> Tuple[str, ...]:
    """The argv prefix that starts the worker in a scope of its slice, dropped to identity."""
    quota = conf["Logs.CollectorCpuQuota"]
    memory = conf["Logs.CollectorMemoryLimit"]
    argv = [shutil.which("systemd-run", path=SAFE_PATH), "--scope", "--quiet", "--collect",
            "--slice=" + spec.slice,
            # Unique per run: the last run's scope may not be gone yet.
            "--unit=guestagent-%s-%d-%d.scope" % (spec.name, os.getpid(), next(_RUNS)),
            "--property=CPUAccounting=yes", "--property=MemoryAccounting=yes",
            "--property=CPUQuota=%d%%" % quota, "--property=MemoryMax=%d" % memory,
            "--", python, "-I", "-m", "spawner.drop",
            str(identity.uid), str(identity.gid), str(os.getpid()), "--"]
    return tuple(argv)


def _own_v1(controller: str) -> Optional[str]:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controller in controllers.split(","):
                    return path
    except (OSError, ValueError):
        pass
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def cgroups(spec, conf, tree_cgroup: Optional[str]) -> Tuple[str, ...]:
    """Without systemd: the cgroups with the limits the spawn child enters (made, limits set),
    besides the worker's own tree cgroup."""
    memory = conf["Logs.CollectorMemoryLimit"]
    quota = conf["Logs.CollectorCpuQuota"] * CFS_PERIOD // 100
    made = []
    try:
        v1 = cgroup_mounts()[1]
    except OSError:
        v1 = {}
    for controller, files in (("memory", (("memory.limit_in_bytes", str(memory)),)),
                              ("cpu", (("cpu.cfs_period_us", str(CFS_PERIOD)),
                                       ("cpu.cfs_quota_us", str(quota))))):
        mount, own = v1.get(controller), _own_v1(controller)
        if mount is None or own is None:
            continue
        path = os.path.join(mount, own.lstrip("/"), spec.slice)
        try:
            os.makedirs(path, 0o755, exist_ok=True)
            for name, value in files:
                _write(os.path.join(path, name), value)
            made.append(path)
        except OSError as e:
            log.warning("event=slice_limit_failed worker=%s controller=%s path=%s error=%r",
                        spec.name, controller, path, e.strerror)
    if not made and tree_cgroup is not None and \
            not os.path.exists(os.path.join(tree_cgroup, "tasks")):
        # cgroup v2: the limits on the worker's own cgroup, its parent's controllers on.
        try:
            _write(os.path.join(os.path.dirname(tree_cgroup), "cgroup.subtree_control"),
                   "+memory +cpu")
            _write(os.path.join(tree_cgroup, "memory.max"), str(memory))
            _write(os.path.join(tree_cgroup, "cpu.max"), "%d %d" % (quota, CFS_PERIOD))
        except OSError as e:
            log.warning("event=slice_limit_failed worker=%s cgroup=%s error=%r", spec.name,
                        tree_cgroup, e.strerror)
    log.info("event=slice worker=%s systemd=no cgroups=%s", spec.name,
             ",".join(made) or tree_cgroup or "none")
    return tuple(made)
