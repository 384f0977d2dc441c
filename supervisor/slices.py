"""A worker with CPU and memory limits of its own (the log collector, issue 15).

Under systemd: a transient scope of its slice, as waagent's collector runs (`systemd-run
--scope --slice=… -p CPUQuota= -p MemoryMax=`); systemd-run execs in place from the root
spawn child and `spawner.drop` drops privileges with our own code (systemd-run's --uid would
keep root's supplementary groups). Without systemd we make the cgroups (v1: `<slice>` under
our memory and cpu cgroups; v2: the worker's own tree cgroup), entered while still root so the
worker cannot leave. A limit that cannot be set is logged, and the collector's own memory
watch (workers/logcollector/memory.py) still ends the collection in time.
"""

import itertools
import logging
import os
import shutil
from typing import Optional, Tuple

from cgroups import mounts as cgroup_mounts, own_cgroup, write

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
        mount = v1.get(controller)
        own = own_cgroup(hierarchy=mount, controller=controller) if mount else None
        if own is None:
            continue
        path = os.path.join(mount, own.lstrip("/"), spec.slice)
        try:
            os.makedirs(path, 0o755, exist_ok=True)
            for name, value in files:
                write(os.path.join(path, name), value)
            made.append(path)
        except OSError as e:
            log.warning("event=slice_limit_failed worker=%s controller=%s path=%s error=%r",
                        spec.name, controller, path, e.strerror)
    if not made and tree_cgroup is not None and \
            not os.path.exists(os.path.join(tree_cgroup, "tasks")):
        # cgroup v2: the limits on the worker's own cgroup, its parent's controllers on.
        try:
            write(os.path.join(os.path.dirname(tree_cgroup), "cgroup.subtree_control"),
                   "+memory +cpu")
            write(os.path.join(tree_cgroup, "memory.max"), str(memory))
            write(os.path.join(tree_cgroup, "cpu.max"), "%d %d" % (quota, CFS_PERIOD))
        except OSError as e:
            log.warning("event=slice_limit_failed worker=%s cgroup=%s error=%r", spec.name,
                        tree_cgroup, e.strerror)
    log.info("event=slice worker=%s systemd=no cgroups=%s", spec.name,
             ",".join(made) or tree_cgroup or "none")
    return tuple(made)
