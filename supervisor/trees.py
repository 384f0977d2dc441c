"""A worker is its whole process tree (issue 10 §5): what it starts stops with it.

A compromised worker can fork, leave its process group with setsid() and double-fork so
its descendants are nobody's children. Three things hold its tree anyway:

1. **A cgroup per worker** wherever a cgroup v2 hierarchy is mounted (under systemd the
   unit's own cgroup, `Delegate=yes` in systemd/guestagent.service; elsewhere the unified
   hierarchy of a hybrid host): `<our cgroup>/guestagent.<supervisor pid>/<worker>`. The
   worker moves itself in while still root (supervisor/spawn.py `_become_worker`, both spawn
   methods), so nothing it starts can leave: an unprivileged process cannot write a
   root-owned `cgroup.procs`. Killing the tree is one write to `cgroup.kill` (Linux 5.14;
   before that, every pid in `cgroup.procs` until it is empty), atomic against a fork bomb.
   On a cgroup v1-only host the freezer hierarchy serves the same way (freeze, kill, thaw).
2. **Its own process group** (the worker calls setsid()): the stop signal goes to the group,
   so children that stayed in it get the same chance to finish as the worker. Without
   cgroup v2 that is what we have, with the subreaper below.
3. **The supervisor is a child subreaper**: an orphan of a worker's tree becomes our child,
   not init's, so it is reaped here (reap_adopted) and, on a host without cgroup v2, killed
   when it runs under the uid of a worker that has ended.

And when the supervisor itself is killed with SIGKILL? Under systemd, the unit's cgroup is
emptied by systemd (KillMode=mixed), worker cgroups included (and the reaper does it first).
Elsewhere the **reaper** does it (reaper/__init__.py): a small program the supervisor
fork+execs at start-up, before any worker, that keeps only CAP_KILL, ignores the polite
signals and blocks on a pipe whose other end only the supervisor holds. EOF on it — the
supervisor exited or died — makes it kill every worker cgroup and process group the
supervisor told it about, remove the cgroups, and leave. A worker (and so its tree) cannot
signal it: it is root. The workers' own PDEATHSIG is kept.

Without any writable cgroupfs (a container without one) a descendant that leaves the
worker's process group is found only once orphaned, as long as the supervisor lives; after a
SIGKILL of the supervisor only the process groups are killed.
"""

import os
import signal
import sys
import time
from typing import Dict, Optional, Set

import reaper
from ipc import handshake
from reaper import _kill_listed, _killpg, _write, kill_cgroup, remove_cgroup
from supervisor import spawn

REAPER_TITLE = handshake.title("reaper", privileged=True)
CAP_KILL = 5


# ==== cgroups ==============================================================================
def find_hierarchy(mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Where worker cgroups go: the mount point of a cgroup v2 hierarchy (the pure one at
    /sys/fs/cgroup first, else a hybrid host's unified one); on a v1-only host the freezer
    controller's (a frozen cgroup is killed whole, however fast it forks); None: no cgroupfs
    we may write (a container without it): process groups and the subreaper only."""
    v2, freezer = [], []
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                try:
                    sep = fields.index("-")
                except ValueError:
                    continue
                if fields[sep + 1] == "cgroup2":
                    v2.append(fields[4])
                elif fields[sep + 1] == "cgroup" and "freezer" in fields[sep + 3].split(","):
                    freezer.append(fields[4])
    except OSError:
        return None
    for mount in sorted(v2, key=lambda m: (m != "/sys/fs/cgroup", m)) + freezer:
        if os.access(os.path.join(mount, "cgroup.procs"), os.W_OK):
            return mount
    return None


def own_cgroup(pid: str = "self", hierarchy: Optional[str] = None) -> Optional[str]:
    """Our path in `hierarchy` (v2: "0::<path>", v1 freezer: "N:freezer:<path>" in
    /proc/<pid>/cgroup); the v2 one when hierarchy is None."""
    v1 = hierarchy is not None and os.path.exists(os.path.join(hierarchy, "tasks"))  # v2: none
    try:
        with open("/proc/%s/cgroup" % pid) as f:
            for line in f:
                num, controllers, path = line.rstrip("\n").split(":", 2)
                if v1 and "freezer" in controllers.split(","):
                    return path
                if not v1 and num == "0" and controllers == "":
                    return path
    except (OSError, ValueError):
        pass
    return None


# ==== the supervisor's side =================================================================
class Trees:
    """The supervisor's worker trees: a cgroup per worker where there can be one, process
    groups, the subreaper's adopted orphans and the reaper. Loop thread only."""

    def __init__(self, log, hierarchy: Optional[str] = "auto"):
        self.log = log
        self.hierarchy = find_hierarchy() if hierarchy == "auto" else hierarchy
        self.base: Optional[str] = None       # <hierarchy><own>/guestagent.<pid>
        self.groups: Dict[int, str] = {}      # worker pid (= its pgid) -> worker name
        self.uids: Dict[str, Optional[int]] = {}
        self.reaper_pid: Optional[int] = None
        self._reaper_w: Optional[int] = None

    # -- start and end ------------------------------------------------------------------
    def open(self) -> None:
        """At start, before the first worker (and before the spawner, so the reaper is
        forked from a supervisor that has handled no data and holds no child)."""
        try:
            spawn.set_child_subreaper()
        except OSError as e:
            self.log.error("event=subreaper state=off error=%r", str(e))
        own = own_cgroup(hierarchy=self.hierarchy) if self.hierarchy else None
        if own is not None:
            parent = self.hierarchy + own.rstrip("/")
            self._remove_stale(parent)
            base = os.path.join(parent, "guestagent.%d" % os.getpid())
            try:
                os.mkdir(base, 0o755)
                self.base = base
            except FileExistsError:
                self.base = base
            except OSError as e:
                self.log.warning("event=cgroups state=off path=%s error=%r "
                                 "fallback='process group and subreaper'", base, str(e))
        self.log.info("event=worker_trees cgroup=%s", self.base or "none")
        self._start_reaper()

    def _remove_stale(self, parent: str) -> None:
        """What a predecessor killed with SIGKILL left: its reaper killed the trees and
        removed their cgroups, but not its own folder when the parent is not writable
        without CAP_DAC_OVERRIDE (the reaper keeps CAP_KILL only)."""
        try:
            names = [e.name for e in os.scandir(parent) if e.name.startswith("guestagent.")]
        except OSError:
            return
        for name in names:
            pid = name.split(".", 1)[1]
            if pid.isdigit() and not os.path.exists("/proc/%s" % pid):
                if remove_cgroup(os.path.join(parent, name)):
                    self.log.info("event=cgroup_removed path=%s reason='stale'", name)

    def close(self) -> None:
        """At the supervisor's end (every worker stopped): whatever is left goes, and the
        reaper with it (EOF: it sweeps what it knows, then leaves)."""
        for pgid in list(self.groups):
            _killpg(pgid, signal.SIGKILL)
        if self.base is not None:
            remove_cgroup(self.base)
        self._close_reaper_pipe()
        if self.reaper_pid is not None:
            try:
                os.waitpid(self.reaper_pid, 0)
            except ChildProcessError:
                pass
            self.reaper_pid = None

    # -- per worker ---------------------------------------------------------------------
    def prepare(self, name: str, uid: Optional[int]) -> Optional[str]:
        """The cgroup a new `name` worker enters (None: none); empty, made if need be."""
        self.uids[name] = uid
        if self.base is None:
            return None
        path = os.path.join(self.base, name)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not kill_cgroup(path):   # a previous run's leftovers: not this worker's
                self.log.error("event=cgroup_not_empty worker=%s path=%s", name, path)
        except OSError as e:
            self.log.error("event=cgroup_failed worker=%s path=%s error=%r", name, path, str(e))
            return None
        return path

    def started(self, name: str, pid: int) -> None:
        self.groups[pid] = name
        self._tell_reaper("+%d\n" % pid)

    def signal(self, name: str, pid: int, signum: int) -> None:
        """Signal the worker's tree: its process group (it is the leader); with SIGKILL its
        whole cgroup too, whatever left the group."""
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            # Forked, not yet its own group leader (setsid comes first in _become_worker).
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        if signum == signal.SIGKILL and self.base is not None:
            try:
                _write(os.path.join(self.base, name, "cgroup.kill"), "1")
            except OSError:
                _kill_listed(os.path.join(self.base, name))

    def ended(self, name: str, pid: int) -> None:
        """The worker `pid` was reaped: nothing it started outlives it."""
        self.groups.pop(pid, None)
        self._tell_reaper("-%d\n" % pid)
        if self.base is not None:
            path = os.path.join(self.base, name)
            if not remove_cgroup(path):   # made again at its next start
                self.log.error("event=tree_survives worker=%s cgroup=%s", name, path)
        else:
            # The group outlives its reaped leader while a member lives, so its number is
            # not reused meanwhile (a race only with a new leader in the same microseconds).
            _killpg(pid, signal.SIGKILL)
            self._kill_orphans_of(name)

    def _kill_orphans_of(self, name: str) -> None:
        """Without a cgroup: adopted orphans (our children, not a worker) that run under the
        ended worker's uid are what is left of its tree. Killing one orphans its children in
        turn (a moment later): rounds until one finds nothing."""
        uid = self.uids.get(name)
        if not uid:
            return   # a non-root run: workers share our uid, nothing to tell them apart
        for _ in range(50):
            found = False
            for pid in _adopted():
                if pid in self.groups or pid == self.reaper_pid:
                    continue
                try:
                    with open("/proc/%d/status" % pid) as f:
                        st = dict(line.split(":", 1) for line in f if ":" in line)
                    ids, zombie = st["Uid"].split()[:3], st["State"].split()[0] == "Z"
                except (OSError, KeyError, IndexError, ValueError):
                    continue
                if str(uid) in ids and not zombie:   # a zombie is dead: reap_adopted
                    found = True
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if not found:
                return
            time.sleep(0.01)

    # -- reaping ------------------------------------------------------------------------
    def reap_adopted(self, known: Set[int]) -> None:
        """Reap zombies the subreaper bit made ours that no one else waits for: orphans of a
        worker's tree, of processes the broker started (a CustomData script that
        daemonised), a worker whose order failed after its fork, the reaper. Only children
        of the main thread: the broker's own subprocesses are children of its pool threads
        and are waited for by them."""
        for pid in _adopted(main_thread_only=True):
            if pid in known or pid in self.groups:
                continue
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[-1].split()[0] != "Z":
                        continue
                got, status = os.waitpid(pid, os.WNOHANG)
            except (OSError, IndexError):
                continue
            if not got:
                continue
            if pid == self.reaper_pid:
                self.log.error("event=reaper_exit pid=%d status=%r action=restart", pid,
                               spawn.describe_status(status))
                self.reaper_pid = None
                self._close_reaper_pipe()
                self._start_reaper()
            else:
                self.log.info("event=reaped_orphan pid=%d status=%r", pid,
                              spawn.describe_status(status))

    # -- the reaper ---------------------------------------------------------------------
    def _start_reaper(self) -> None:
        """Fork+exec reaper/__init__.py (why a program of its own: its docstring)."""
        r, w = os.pipe()   # both O_CLOEXEC: no other child of ours inherits the write end
        argv = [REAPER_TITLE, "-I", "-S", os.path.abspath(reaper.__file__),
                self.base or "-"] + [str(p) for p in self.groups]
        python = sys.executable
        try:
            pid = os.fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            self.log.error("event=reaper_failed error=%r", str(e))
            return
        if pid == 0:   # nothing but os calls and prctl until exec, as in spawn.spawn
            try:
                os.dup2(r, 0)   # stdin: the pipe (dup2 clears O_CLOEXEC); 1, 2 kept
                os.closerange(3, spawn._max_fd())
                if os.geteuid() == 0:
                    # Root's permitted set after execve is its bounding set: CAP_KILL only.
                    spawn.drop_capabilities(keep={CAP_KILL})
                    spawn.prctl(spawn.PR_SET_NO_NEW_PRIVS, 1)
                spawn.reset_signals()
                # Inherited across exec: a ^C or a stop of our process group is not for it.
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                    signal.signal(signum, signal.SIG_IGN)
                os.chdir("/")
                os.execve(python, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            except BaseException as e:  # noqa: B902 - never return into the supervisor's code
                try:
                    os.write(2, ("reaper: exec failed: %s\n" % e).encode())
                finally:
                    os._exit(127)
        os.close(r)
        self.reaper_pid, self._reaper_w = pid, w
        self.log.info("event=reaper_start pid=%d", pid)

    def _close_reaper_pipe(self) -> None:
        if self._reaper_w is not None:
            os.close(self._reaper_w)
            self._reaper_w = None

    def _tell_reaper(self, line: str) -> None:
        if self._reaper_w is None:
            return
        try:
            os.write(self._reaper_w, line.encode())
        except OSError as e:
            self.log.error("event=reaper_lost error=%r", str(e))


def _adopted(main_thread_only: bool = False):
    me = os.getpid()
    tasks = [str(me)] if main_thread_only else os.listdir("/proc/%d/task" % me)
    pids = []
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (me, tid)) as f:
                pids.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return pids
