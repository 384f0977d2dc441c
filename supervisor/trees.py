"""A worker is its whole process tree (issue 10 §5): what it starts stops with it.

1. A cgroup per worker wherever we may make one (cgroups/; under systemd the unit's own,
   `Delegate=yes`): `<our cgroup>/guestagent.<supervisor pid>/<worker>`, entered by the
   worker while still root (launch/), so nothing it starts can leave.
2. Its own process group: the stop signal goes to the group.
3. The supervisor is a child subreaper: an orphan of a worker's tree becomes our child and
   is reaped here; without a cgroup it is killed when it runs under an ended worker's uid.
4. When the supervisor exits or dies: under systemd (its service's cgroup holding the worker
   cgroups), KillMode=mixed empties the unit's cgroup; elsewhere the reaper
   (reaper/__init__.py), started before any worker, kills every worker cgroup and process
   group (EOF on its pipe).
Without any writable cgroupfs only the process groups survive a SIGKILL of the supervisor.
"""

import contextlib
import os
import signal
import time
from typing import Dict, Optional, Set

import launch
import reaper
from cgroups import find_hierarchy, kill_cgroup, kill_tree, killpg, own_cgroup, remove_cgroup
from ipc import handshake

REAPER_TITLE = handshake.title("reaper", privileged=True)


class Trees:
    """The supervisor's worker trees (loop thread only)."""

    def __init__(self, log, hierarchy: Optional[str] = "auto"):
        self.log = log
        self.hierarchy = find_hierarchy() if hierarchy == "auto" else hierarchy
        self.base: Optional[str] = None       # <hierarchy><own>/guestagent.<pid>
        self.groups: Dict[int, str] = {}      # worker pid (= its pgid) -> worker name
        self.uids: Dict[str, Optional[int]] = {}
        self.reaper_pid: Optional[int] = None
        self._reaper_w: Optional[int] = None

    def open(self) -> None:
        """At start, before the first worker and the spawner (the reaper is forked from a
        supervisor that has handled no data and holds no child)."""
        try:
            launch.set_child_subreaper()
        except OSError as e:
            self.log.error("event=subreaper state=off error=%r", str(e))
        own = own_cgroup(hierarchy=self.hierarchy) if self.hierarchy else None
        if own is not None:
            parent = self.hierarchy + own.rstrip("/")
            self._remove_stale(parent)
            base = os.path.join(parent, "guestagent.%d" % os.getpid())
            try:
                os.makedirs(base, 0o755, exist_ok=True)
                self.base = base
            except OSError as e:
                self.log.warning("event=cgroups state=off path=%s error=%r "
                                 "fallback='process group and subreaper'", base, str(e))
        self.log.info("event=worker_trees cgroup=%s", self.base or "none")
        if self.base is not None and own.rstrip("/").endswith(".service") and \
                os.environ.get("INVOCATION_ID"):
            # systemd's service, the worker cgroups inside its cgroup: when the supervisor
            # dies systemd kills what is left there (guestagent.service, KillMode=mixed), so
            # a reaper would only cost a resident interpreter (issue 17; tests/system).
            self.log.info("event=reaper state=off reason='systemd empties the unit cgroup'")
        else:
            self._start_reaper()

    def _remove_stale(self, parent: str) -> None:
        """A predecessor killed with SIGKILL: its reaper (CAP_KILL only) could not remove its
        own folder when the parent needs CAP_DAC_OVERRIDE."""
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
        """Every worker stopped: whatever is left goes, and the reaper (EOF) with it."""
        for pgid in list(self.groups):
            killpg(pgid, signal.SIGKILL)
        if self.base is not None:
            remove_cgroup(self.base)
        self._close_reaper_pipe()
        if self.reaper_pid is not None:
            try:
                os.waitpid(self.reaper_pid, 0)
            except ChildProcessError:
                pass
            self.reaper_pid = None

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
        """Its process group (it is the leader); with SIGKILL its whole cgroup too."""
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:   # forked, not yet its own group leader
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if signum == signal.SIGKILL and self.base is not None:
            kill_tree(os.path.join(self.base, name))

    def ended(self, name: str, pid: int) -> None:
        """The worker `pid` was reaped: nothing it started outlives it."""
        self.groups.pop(pid, None)
        self._tell_reaper("-%d\n" % pid)
        if self.base is not None:
            path = os.path.join(self.base, name)
            if not remove_cgroup(path):   # made again at its next start
                self.log.error("event=tree_survives worker=%s cgroup=%s", name, path)
            return
        # The group outlives its reaped leader while a member lives, so its number is not
        # reused meanwhile.
        killpg(pid, signal.SIGKILL)
        uid = self.uids.get(name)
        # Adopted orphans under the ended worker's uid are what is left of its tree; killing
        # one orphans its children a moment later: rounds until one finds nothing. (A
        # non-root run: workers share our uid, nothing to tell them apart.)
        for _ in range(50 if uid else 0):
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
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if not found:
                return
            time.sleep(0.01)

    def reap_adopted(self, known: Set[int]) -> None:
        """Reap zombies the subreaper bit made ours that no one else waits for (orphans, a
        worker whose spawn order failed after its fork, the reaper). Children of the main
        thread only: the broker's pool threads wait for their own subprocesses."""
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
            what = launch.describe_status(status)
            if pid == self.reaper_pid:
                self.log.error("event=reaper_exit pid=%d status=%r action=restart", pid, what)
                self.reaper_pid = None
                self._close_reaper_pipe()
                self._start_reaper()
            else:
                self.log.info("event=reaped_orphan pid=%d status=%r", pid, what)

    def _start_reaper(self) -> None:
        r, w = os.pipe()   # both O_CLOEXEC: no other child of ours inherits the write end
        argv = [REAPER_TITLE, "-I", "-S", os.path.abspath(reaper.__file__),
                self.base or "-"] + [str(p) for p in self.groups]
        try:
            pid = launch.spawn_reaper(argv, r)
        except OSError as e:
            os.close(w)
            self.log.error("event=reaper_failed error=%r", str(e))
            return
        finally:
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
