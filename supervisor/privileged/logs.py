"""The log collector's descriptors (ipc/verbs/logs.py; protocol.md §8).

The manifest is the broker's: it expands it here, itself, never from a path a worker sent,
and keeps the list; `logs.open` takes an index into that list. Expansion looks at every
level with lstat (scandir without following), so a symlink is listed as left out, never
entered. Opening walks again from / one component at a time with O_NOFOLLOW relative to the
parent's descriptor, so a folder swapped for a symlink between the two (a race) ends the walk
(ELOOP/ENOTDIR) instead of handing over /root/.ssh. Below its base every folder must belong to
root (or, under Agent.StateDir/<worker>/, to that worker) and not be writable by others; the
file must be a regular file (opened O_NONBLOCK, checked with fstat: a FIFO never blocks) with
one link (no hard-linked /etc/shadow), and never a private key (`.prv`, the transport key's
folder).
"""

import fnmatch
import logging
import os
import pwd
import stat
import subprocess
import threading
import time
from typing import Dict, List, Optional, Tuple

from ipc.verbs import logs as L
from statefiles import unlinked_file
from supervisor import table
from supervisor.broker import Context, Privileged
from supervisor.privileged import SAFE_PATH, ensure_root_dir, fail, which

log = logging.getLogger("guestagent.broker.logs")

LOGS = frozenset(("logcollector",))
ROOT, LOGDIR, LIB, STATE = "root", "logdir", "lib", "state"

# (base, pattern relative to it, priority, -full only). Priorities follow waagent's order:
# the agent's log, the status and goal-state history, extension logs, rotated agent logs,
# then the rest (protocol.md §8).
MANIFEST: Tuple[Tuple[str, str, int, bool], ...] = (
    (LOGDIR, "*.log", 0, False),
    (ROOT, "var/log/waagent.log", 0, False),
    (LIB, "waagent_status.json", 1, False),
    (STATE, "*/history/*", 1, False),
    (LIB, "history/*.zip", 1, False),
    (ROOT, "var/log/azure/*/*", 2, False),
    (ROOT, "var/log/azure/*/*/*", 2, False),
    (LOGDIR, "*.log.*", 3, False),
    (ROOT, "var/log/waagent.log.*", 3, False),
    (ROOT, "etc/*-release", 4, False),
    (ROOT, "etc/HOSTNAME", 4, False),
    (ROOT, "etc/hostname", 4, False),
    (ROOT, "etc/waagent.conf", 4, False),
    (ROOT, "var/log/dmesg*", 4, False),
    (ROOT, "var/log/syslog*", 4, False),
    (ROOT, "var/log/auth*", 4, False),
    (LIB, "ovf-env.xml", 4, False),
    (LIB, "*/status/*.status", 4, False),
    (LIB, "*/config/*.settings", 4, False),
    (LIB, "*/config/HandlerState", 4, False),
    (LIB, "*/config/HandlerStatus", 4, False),
    (LIB, "error.json", 4, False),
    # -full (waagent's full manifest, the parts that exist on the images we run on)
    (LIB, "provisioned", 5, True),
    (LIB, "SharedConfig.xml", 5, True),
    (LIB, "*/error.json", 5, True),
    (ROOT, "etc/fstab", 5, True),
    (ROOT, "etc/ssh/sshd_config", 5, True),
    (ROOT, "etc/default/grub", 5, True),
    (ROOT, "etc/network/interfaces", 5, True),
    (ROOT, "etc/netplan/50-cloud-init.yaml", 5, True),
    (ROOT, "etc/nsswitch.conf", 5, True),
    (ROOT, "etc/resolv.conf", 5, True),
    (ROOT, "var/log/messages*", 5, True),
    (ROOT, "var/log/kern*", 5, True),
    (ROOT, "var/log/dpkg*", 5, True),
    (ROOT, "var/log/cloud-init*", 5, True),
    (ROOT, "var/log/boot*", 5, True),
    (ROOT, "var/log/azure-proxy-agent/*", 5, True),
)

# Never listed, whatever a pattern matches: private keys, and folders of ours that hold one
# (the transport key) or the collector's own bundle.
NEVER_SUFFIXES = (".prv", ".key")
NEVER_STATE_FOLDERS = ("platform", "broker", "logcollector")
MAX_PER_PATTERN = 500
JOURNAL_UNITS = ("guestagent.service", "guestagent-*.slice", "guestagent-*.scope")
JOURNAL_TIMEOUT = 120.0
JOURNAL_LINES = 300000

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Entry:
    __slots__ = ("kind", "base", "rel", "priority", "size", "mtime", "owner")

    def __init__(self, kind, base, rel, priority, size, mtime, owner):
        self.kind, self.base, self.rel, self.priority = kind, base, rel, priority
        self.size, self.mtime, self.owner = size, mtime, owner

    @property
    def path(self) -> str:
        return os.path.join(self.base, *self.rel)

    @property
    def name(self) -> str:
        return archive_name(self.kind, self.base, self.rel)


def archive_name(kind: str, base: str, rel: List[str]) -> str:
    """The path without its leading / (under Logs.CollectRoot: the path the file has on the
    system it stands for)."""
    path = "/".join(rel) if kind == ROOT else os.path.join(base, *rel).lstrip("/")
    return path[:300]


# The broker's own list, per worker name (one collector): what logs.open indexes.
_LISTS: Dict[str, List[Entry]] = {}
_LOCK = threading.Lock()


def _bases(conf) -> Dict[str, str]:
    return {ROOT: os.path.abspath(conf["Logs.CollectRoot"] or "/"),
            LOGDIR: os.path.abspath(conf["Agent.LogDir"]),
            LIB: os.path.abspath(conf["Lib.Dir"]),
            STATE: os.path.abspath(conf["Agent.StateDir"])}


def _worker_uids() -> Dict[str, int]:
    """Agent.StateDir/<worker>/ belongs to that worker's user (supervisor/loop.py)."""
    uids = {}
    for spec in table.BASE:
        try:
            uids[spec.name] = pwd.getpwnam(spec.user).pw_uid
        except KeyError:
            continue
    return uids


def _owner_for(kind: str, rel: List[str], uids: Dict[str, int]) -> Optional[int]:
    """Who besides root may own the folders and file of this entry (None: root only)."""
    if kind == STATE and rel:
        return uids.get(rel[0], -1)
    return None


def _never(kind: str, rel: List[str]) -> Optional[str]:
    if rel[-1].endswith(NEVER_SUFFIXES):
        return "a private key"
    if kind == STATE and rel[0] in NEVER_STATE_FOLDERS:
        return "the agent's own secrets or bundle"
    return None


def _dir_ok(st: os.stat_result, owner: Optional[int]) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid in (0, owner) and not st.st_mode & 0o002


def expand(conf, full: bool):
    """The manifest's files as Entries (collection order) and what was left out and why."""
    bases = _bases(conf)
    uids = _worker_uids()
    found: Dict[str, Entry] = {}
    skipped: Dict[str, str] = {}
    for kind, pattern, priority, full_only in MANIFEST:
        if full_only and not full:
            continue
        base = bases[kind]
        parts = pattern.split("/")
        matches = 0
        level = [[]]          # relative component lists matched so far
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            nxt = []
            for rel in level:
                folder = os.path.join(base, *rel)
                try:
                    names = sorted(e.name for e in os.scandir(folder))
                except OSError:
                    continue
                for name in names:
                    if not fnmatch.fnmatchcase(name, part):
                        continue
                    here = rel + [name]
                    path = os.path.join(base, *here)
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    name = archive_name(kind, base, here)
                    if stat.S_ISLNK(st.st_mode):
                        skipped[name] = "a symlink (never followed)"
                        continue
                    if not last:
                        if stat.S_ISDIR(st.st_mode):
                            nxt.append(here)
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        skipped[name] = "not a regular file"
                        continue
                    why = _never(kind, here)
                    if why:
                        skipped[name] = why
                        continue
                    if path in found or matches >= MAX_PER_PATTERN:
                        continue
                    matches += 1
                    found[path] = Entry(kind, base, here, priority, st.st_size, st.st_mtime,
                                        _owner_for(kind, here, uids))
            level = nxt
    files = sorted(found.values(), key=lambda e: (e.priority, -e.mtime, e.path))
    dropped = max(0, len(files) - L.MAX_ENTRIES)
    return files[:L.MAX_ENTRIES], skipped, dropped


def _walk_open(entry: Entry) -> int:
    """Open entry's file from / down, component by component, never following a symlink."""
    base_parts = [p for p in entry.base.split("/") if p]
    fd = os.open("/", DIR_FLAGS)
    try:
        for i, part in enumerate(base_parts + entry.rel[:-1]):
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise fail("%s: %s at %s" % (entry.name, _why(e), part)) from None
            os.close(fd)
            fd = nfd
            if i >= len(base_parts) and not _dir_ok(os.fstat(fd), entry.owner):
                raise fail("%s: the folder %s may be written by others than root" %
                           (entry.name, part))
        try:
            ffd = os.open(entry.rel[-1], FILE_FLAGS, dir_fd=fd)
        except OSError as e:
            raise fail("%s: %s" % (entry.name, _why(e))) from None
    finally:
        os.close(fd)
    st = os.fstat(ffd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "not a regular file"
    elif st.st_nlink != 1:
        why = "a file with more than one link"
    elif entry.owner is not None and st.st_uid not in (0, entry.owner):
        why = "a file of another owner"
    if why:
        os.close(ffd)
        raise fail("%s: %s" % (entry.name, why))
    return ffd


def _why(e: OSError) -> str:
    import errno
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symlink or not a folder (never followed)"
    return e.strerror or str(e)


_FULL_NEXT = threading.Event()


def full_next(full: bool) -> None:
    """Root asked for a collection (control.collect_logs): whether its manifest is -full.
    Set by the supervisor, never by a worker; taken by the next logs.manifest."""
    if full:
        _FULL_NEXT.set()
    else:
        _FULL_NEXT.clear()


def manifest(ctx: Context, args: dict) -> dict:
    full = _FULL_NEXT.is_set()
    _FULL_NEXT.clear()
    files, skipped, dropped = expand(ctx.conf, full)
    with _LOCK:
        _LISTS[ctx.worker] = files
    log.info("event=logs_manifest worker=%s files=%d skipped=%d dropped=%d", ctx.worker,
             len(files), len(skipped), dropped)
    return {"files": [{"name": e.name, "size": e.size, "mtime": max(0.0, e.mtime),
                       "priority": e.priority} for e in files],
            "skipped": [{"name": p, "why": w}
                        for p, w in sorted(skipped.items())[:L.MAX_ENTRIES]],
            "dropped": dropped}


def open_entry(ctx: Context, args: dict) -> dict:
    with _LOCK:
        files = _LISTS.get(ctx.worker, [])
    index = args["index"]
    if index >= len(files):
        raise fail("no entry %d in the manifest (%d entries; call logs.manifest first)"
                   % (index, len(files)))
    entry = files[index]
    fd = _walk_open(entry)
    ctx.reply_fds.append(fd)
    return {"name": entry.name, "size": os.fstat(fd).st_size}


def journal(ctx: Context, args: dict) -> dict:
    exe = which("journalctl")
    if exe is None:
        raise fail("journalctl is not installed")
    folder = os.path.join(ctx.conf["Agent.StateDir"], "broker")
    ensure_root_dir(folder, 0o700)
    argv = [exe, "--no-pager", "--quiet", "--output=short-iso", "--since=-7d",
            "--lines=%d" % JOURNAL_LINES]
    for unit in JOURNAL_UNITS:
        argv.append("--unit=" + unit)
    with open(unlinked_file(folder), "w+b") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.DEVNULL, close_fds=True,
                                    start_new_session=True, cwd="/",
                                    env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
        except OSError as e:
            raise fail("journalctl could not start: %s" % e.strerror) from None
        deadline = time.monotonic() + JOURNAL_TIMEOUT
        while proc.poll() is None:
            if ctx.cancel.is_set() or time.monotonic() > deadline:
                try:
                    os.killpg(proc.pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
                raise fail("journalctl did not finish in %.0f s" % JOURNAL_TIMEOUT)
            ctx.cancel.wait(0.1)
        if proc.returncode != 0:
            raise fail("journalctl exited %d" % proc.returncode)
        # The worker gets a read-only descriptor on the (unlinked) file, never a writable one.
        fd = os.open("/proc/self/fd/%d" % out.fileno(), os.O_RDONLY | os.O_CLOEXEC)
    ctx.reply_fds.append(fd)
    return {"size": os.fstat(fd).st_size, "units": list(JOURNAL_UNITS)}


VERBS = (
    Privileged(L.MANIFEST, manifest, LOGS, slow=True),
    Privileged(L.OPEN, open_entry, LOGS),
    Privileged(L.JOURNAL, journal, LOGS, slow=True),
)
