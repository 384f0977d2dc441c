"""Start a process in a clean, unprivileged image (DESIGN.md principle 7): the worker
(fork+exec, or forked by the spawner), the spawner and the reaper. Used by the supervisor
and by spawner/; imports neither. launch/forked.py: a short-lived fork for a rare, heavy job
(a worker's or the broker's), whose imports leave with it.

In a worker, between fork and exec, between fork and exec, in this order:
0. into its own cgroup, when the supervisor made one (cgroups/): from then on
   nothing it starts can leave it, whatever it does with sessions and forks;
1. its own session and process group (a terminal's ^C reaches the supervisor only; it
   decides; and the supervisor signals the group, so children that stay in it go too);
2. fd 0 = /dev/null, fd 1 and 2 = the log pipe, fd 3 = the worker's end of its channel
   (a socketpair made before the fork); every other descriptor is closed;
3. the capability bounding set and the ambient set emptied (while we still may), then
   setgroups([]), setgid(guestagent-wire), setuid(worker user): permitted and effective
   capabilities go with the uid change, so CapEff is 0;
4. PR_SET_PDEATHSIG(SIGKILL) — after setuid, which clears it — then a check that the
   supervisor did not die meanwhile; PR_SET_NO_NEW_PRIVS; PR_SET_THP_DISABLE (below);
5. signal dispositions and mask reset, umask 077, cwd /;
6. execve of `<venv python> -I -m workers.<name>` with a clean environment.
`-I` (isolated) ignores PYTHON* variables, the user site and the current directory.

Python's subprocess cannot do step 4 after its own setuid without preexec_fn, so this is a
plain os.fork; the child calls only os functions and prctl through ctypes (loaded before the
fork) until exec. If a step fails the child writes one line to its log pipe and exits 127.
"""

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import sys
import threading
from typing import Dict, NamedTuple, Optional

from cgroups import enter_cgroup
# What the worker must agree on, from the one neutral module (re-exported for loop.py).
from ipc.handshake import (CHANNEL_FD, ENV_CHANNEL_FD, ENV_CONFIG,  # noqa: F401
                           ENV_LOG_LEVEL, ENV_TEST_DIR, ENV_WORKER)

SPAWN_FAILED = 127

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_THP_DISABLE = 41

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_FIXED_THRESHOLD = 128 * 1024   # glibc's default, kept fixed


def tune_malloc() -> None:
    """glibc's malloc for a long-lived process that is idle most of the time (issue 17's PSS).

    One arena: a thread's first malloc otherwise gets an arena of its own (up to 8 a core),
    whose pages stay with the process after a burst (the broker's pool threads during
    provisioning, a worker's HTTP). Fixed mmap and trim thresholds: glibc raises both after
    a large block is freed (up to 32 MiB), so the next large buffers — a package, a status
    blob, a goal state's certificates — come from the heap and stay resident. Before any
    thread; inherited by what forks from us. Not glibc (no mallopt): nothing to do."""
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is None:
        return
    mallopt(M_ARENA_MAX, 1)
    mallopt(M_MMAP_THRESHOLD, MALLOC_FIXED_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, MALLOC_FIXED_THRESHOLD)


def release_free_memory() -> None:
    """Give the heap's free pages back to the kernel (malloc_trim(0)): after a burst of work
    whose buffers are freed but would stay counted in the process's PSS. A few hundred µs:
    call it after work that happens rarely (a new goal state), not on every idle turn."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def prctl(option: int, arg2: int = 0) -> None:
    if _libc.prctl(option, arg2, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(%d): %s" % (option, os.strerror(err)))


def set_child_subreaper() -> None:
    """Orphaned descendants become our children (not init's): how a worker forked by the
    spawner (spawner/zygote.py, a double fork) becomes the supervisor's child."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    flag = ctypes.c_int(0)
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag), 0, 0, 0) != 0 \
            or flag.value != 1:
        raise OSError("PR_SET_CHILD_SUBREAPER did not take")


def _cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 40


CAP_LAST_CAP = _cap_last_cap()


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities(keep=()) -> None:
    """Empty the bounding set but `keep`, and the ambient set."""
    for cap in range(CAP_LAST_CAP + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def reset_signals() -> None:
    """No signal blocked, every disposition the default (a child inherits ours)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass


def keep_capabilities(caps) -> None:
    """Drop every capability but `caps` from the bounding set, then set permitted and
    effective to `caps` and inheritable and ambient to nothing (capset(2) through libc)."""
    drop_capabilities(keep=caps)
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    # Two __user_cap_data_struct {effective, permitted, inheritable}: caps 0-31, 32-63.
    data = (ctypes.c_uint32 * 6)(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0,
                                 mask >> 32, mask >> 32, 0)
    if _libc.capset(header, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "capset: %s" % os.strerror(err))


class Identity(NamedTuple):   # not a dataclass: see config/keys.py Key
    uid: int
    gid: int
    home: str = "/"


class Spawned(NamedTuple):
    pid: int
    channel: socket.socket   # the supervisor's end, non-blocking
    log_fd: int              # read end of the log pipe, non-blocking


def worker_env(name: str, config_path: str, log_level: str,
               test_dir: Optional[str] = None) -> Dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/",
        ENV_CHANNEL_FD: str(CHANNEL_FD),
        ENV_WORKER: name,
        ENV_CONFIG: config_path,
        ENV_LOG_LEVEL: log_level,
    }
    if test_dir:
        env[ENV_TEST_DIR] = test_dir
    return env


def spawn(module: str, identity: Optional[Identity], env: Dict[str, str],
          python: str = sys.executable, cgroup=None, wrapper=()) -> Spawned:
    """Start `python -I -m module` as identity (None: stay as we are, for a non-root run),
    in `cgroup` (a cgroup directory or a tuple of them; None: none); `wrapper`: argv that
    runs it (systemd-run and spawner.drop, supervisor/slices.py)."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log_r, log_w = os.pipe()
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    argv = [python, "-I", "-m", module]
    supervisor_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for fd in (log_r, log_w, devnull):
            os.close(fd)
        parent_end.close()
        child_end.close()
        raise
    if pid == 0:  # the child: nothing but os calls until exec
        try:
            _become_worker(child_end.fileno(), log_w, devnull, identity, supervisor_pid, cgroup)
            os.execve((list(wrapper) or argv)[0], list(wrapper) + argv, env)
        except BaseException as e:  # noqa: B902 - anything: report and leave
            try:
                os.write(2, ("spawn of %s failed: %s\n" % (module, e)).encode())
            finally:
                os._exit(SPAWN_FAILED)
    child_end.close()
    os.close(log_w)
    os.close(devnull)
    parent_end.setblocking(False)
    os.set_blocking(log_r, False)
    return Spawned(pid, parent_end, log_r)


def _become_worker(channel_fd, log_fd, devnull, identity, supervisor_pid, cgroup=None):
    # Still root: an unprivileged process cannot write a root-owned cgroup.procs, so
    # neither the worker nor anything it starts can move out of it. (A tuple: also the
    # limits' cgroups of supervisor/slices.py.)
    for path in (cgroup,) if isinstance(cgroup, str) else (cgroup or ()):
        enter_cgroup(path)
    os.setsid()
    # Lift the three descriptors above the low numbers first, so no dup2 clobbers another.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (devnull, log_fd, channel_fd)]
    os.dup2(high[0], 0)
    os.dup2(high[1], 1)
    os.dup2(high[1], 2)
    os.dup2(high[2], CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, _max_fd())
    drop_privileges(identity, supervisor_pid)


def drop_privileges(identity, supervisor_pid):
    """Steps 3-5 (also spawner/drop.py's, for a worker started through systemd-run)."""
    if identity is not None:
        drop_capabilities()
        os.setgroups([])
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
        if os.getuid() != identity.uid or os.geteuid() != identity.uid:
            raise OSError("uid did not change")
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        os._exit(SPAWN_FAILED)  # the supervisor died before the death signal was armed
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    no_huge_pages()
    reset_signals()
    os.umask(0o077)
    os.chdir("/")


def no_huge_pages(disable: bool = True) -> None:
    """No transparent huge pages in this process and what it forks or execs: the supervisor
    (daemon.py) and, through drop_privileges, the spawner and every worker (issue 17). Under
    THP "always" (Debian's kernels) a thread's stack or a 2 MiB-aligned run of arenas takes a
    whole 2 MiB page for the few KiB it uses: 2-4 MiB of an idle process's PSS in the VM
    benchmark, depending on where its mappings land. A kernel without THP: nothing to do."""
    try:
        prctl(PR_SET_THP_DISABLE, 1 if disable else 0)
    except OSError:
        pass


_KERNEL_THP = threading.Lock()


@contextlib.contextmanager
def kernel_huge_pages():
    """Around the start of a process that is not ours (an extension command): it inherits
    the kernel's THP choice, not our flag. The flag is the process's, so the starts that want
    it cleared take turns; another child forked meanwhile may inherit it cleared (harmless),
    and the supervisor's own page faults in those milliseconds may get huge pages."""
    with _KERNEL_THP:
        no_huge_pages(False)
        try:
            yield
        finally:
            no_huge_pages(True)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


CAP_KILL = 5


def spawn_reaper(argv, stdin: int, python: str = sys.executable) -> int:
    """Fork+exec the reaper (reaper/__init__.py) with `stdin` as its fd 0, holding CAP_KILL
    alone; its pid."""
    pid = os.fork()
    if pid == 0:   # nothing but os calls and prctl until exec, as in spawn()
        try:
            os.dup2(stdin, 0)   # dup2 clears O_CLOEXEC; 1, 2 kept
            os.closerange(3, _max_fd())
            if os.geteuid() == 0:
                # Root's permitted set after execve is its bounding set: CAP_KILL only.
                drop_capabilities(keep={CAP_KILL})
                prctl(PR_SET_NO_NEW_PRIVS, 1)
            reset_signals()
            # Inherited across exec: a ^C or a stop of our process group is not for it.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(signum, signal.SIG_IGN)
            os.chdir("/")
            os.execve(python, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        except BaseException as e:  # noqa: B902 - never return into the caller's code
            try:
                os.write(2, ("reaper: exec failed: %s\n" % e).encode())
            finally:
                os._exit(SPAWN_FAILED)
    return pid


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "killed by %s" % name
    return "exit %d" % os.WEXITSTATUS(status)
