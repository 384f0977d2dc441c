"""The broker's privileged effects, one module per thing held (accounts, ssh, hostname, the
DVD, custom data, the provisioning state, the gates). Each module ends with its VERBS: one
`supervisor.broker.Privileged` row per verb (contract, handler, permit), which
supervisor/broker.py lists explicitly. This package holds the common ground: running a
command with a bounded output, no secret on argv, a deadline that holds for a silent child and
the supervisor's cancellation (the child's whole process group is killed); writing a root file
atomically; reading a file that is a regular file (never a FIFO, device or symlink: opened
O_NONBLOCK|O_NOFOLLOW and checked with fstat before a byte is read); and opening a path
inside a user's home without following a symlink or chowning anything of root's.
"""

import errno
import os
import queue
import selectors
import signal
import stat
import subprocess
import threading
import time
from typing import Callable, Optional, Sequence, Tuple

from ipc.errors import FAILED, IpcError
from statefiles import write_atomic

MAX_OUTPUT = 64 * 1024
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fail(message: str) -> IpcError:
    return IpcError(FAILED, message[:1000])


def which(name: str) -> Optional[str]:
    import shutil   # lazily: the resident supervisor needs it only while provisioning
    return shutil.which(name, path=SAFE_PATH)


def supervise(proc: subprocess.Popen, timeout: float,
              cancel: Optional[threading.Event] = None, keep: int = MAX_OUTPUT
              ) -> Tuple[Optional[int], bytes, int, Optional[str]]:
    """Wait for a child started with stdout=PIPE and start_new_session=True, reading its
    output as it comes (the last `keep` bytes kept) and never longer than `timeout` on the
    monotonic clock nor past `cancel`: whether it prints or not, the deadline holds; on the
    deadline or cancellation its whole process group is killed. Returns (exit code or None,
    output tail, output size, None | "timeout" | "cancelled")."""
    deadline = time.monotonic() + timeout
    why = None
    tail, size = b"", 0
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        open_ = True
        while True:
            if cancel is not None and cancel.is_set():
                why = "cancelled"
                break
            left = deadline - time.monotonic()
            if left <= 0:
                why = "timeout"
                break
            if open_:
                if sel.select(min(left, 0.2)):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        open_ = False
                        continue
                    size += len(chunk)
                    tail = (tail + chunk)[-keep:] if keep else b""
            else:
                try:
                    proc.wait(timeout=min(left, 0.2))
                    break
                except subprocess.TimeoutExpired:
                    continue
    finally:
        sel.close()
    if why is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    proc.stdout.close()
    return proc.returncode, tail, size, why


def run(argv: Sequence[str], stdin: Optional[bytes] = None, timeout: float = 60.0,
        cancel: Optional[threading.Event] = None, check: bool = True,
        cwd: str = "/", nice: int = 0) -> Tuple[int, str]:
    """Run a command (never a shell), secrets only on stdin; (exit code, merged output capped).

    The deadline and `cancel` (the supervisor stopping) hold even for a child that prints
    nothing: its process group is killed and FAILED raised. A missing program or a non-zero
    exit with check=True raises FAILED naming the program and the end of its output
    (commands given here print no secret). `nice`: the child runs at that niceness
    adjustment from its first instruction (coreutils' `nice` execs it; below 0, root's, for
    work the boot waits for before anything else)."""
    exe = argv[0] if os.path.isabs(argv[0]) else which(argv[0])
    if exe is None:
        raise fail("%s is not installed" % argv[0])
    command = [exe] + list(argv[1:])
    nicer = which("nice") if nice else None
    if nicer is not None:
        command = [nicer, "-n", str(nice)] + command
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE if stdin is not None
                                else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, cwd=cwd, close_fds=True,
                                start_new_session=True)
    except OSError as e:
        raise fail("%s could not start: %s" % (argv[0], e.strerror)) from None
    if stdin is not None:
        # Small (a chpasswd line): it fits the pipe, so the write never waits on the child.
        try:
            proc.stdin.write(stdin)
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
    code, out, _, why = supervise(proc, timeout, cancel)
    if why == "timeout":
        raise fail("%s did not finish in %.0f s" % (argv[0], timeout))
    if why == "cancelled":
        raise fail("%s: the supervisor is stopping" % argv[0])
    text = out.decode("utf-8", "replace").strip()
    if check and code != 0:
        raise fail("%s exited %d: %s" % (os.path.basename(argv[0]), code,
                                         text[-300:] or "no output"))
    return code, text


# A key's prime search takes a random time (the count of candidates tried is close to
# geometric): under emulation an RSA 3072 key took 3.5-17 s. Two searches at once on a VM with
# two vCPUs, the first to end kept, cut both the mean and the tail (benchmarks/README.md,
# "eighth session"). The spare one runs niced, on the CPU nobody else wants.
SPARE_NICE = 10


def searches() -> int:
    """How many searches race for one key: two where there is a second CPU for the spare."""
    return 2 if (os.cpu_count() or 1) > 1 else 1


class _Stop:
    """The cancel of one attempt in a race: set when the race is decided or the supervisor
    stops (run() polls is_set())."""

    def __init__(self, outer: Optional[threading.Event]):
        self.outer, self.own = outer, threading.Event()

    def is_set(self) -> bool:
        return self.own.is_set() or (self.outer is not None and self.outer.is_set())


def first_to_finish(attempts: Sequence[Callable[[_Stop], None]],
                    cancel: Optional[threading.Event] = None) -> int:
    """Run the attempts at once, each in its own thread with its own cancel; the index of the
    first to return, once every other has been cancelled (run() kills its process group) and
    has ended. Attempts write only their own temporary files: the caller commits the
    winner's. If none returns, the first error is raised."""
    done: "queue.Queue" = queue.Queue()
    stops = [_Stop(cancel) for _ in attempts]

    def attempt(i: int) -> None:
        try:
            attempts[i](stops[i])
            done.put((i, None))
        except Exception as e:   # (handed to the caller: raised if no attempt succeeds)
            done.put((i, e))
    threads = [threading.Thread(target=attempt, args=(i,), name="search-%d" % i, daemon=True)
               for i in range(len(attempts))]
    for t in threads:
        t.start()
    winner, errors = None, []
    try:
        while winner is None and len(errors) < len(threads):
            i, error = done.get()
            if error is None:
                winner = i
            else:
                errors.append(error)
    finally:
        for s in stops:
            s.own.set()
        for t in threads:
            t.join()
    if winner is None:
        raise errors[0]
    return winner


def ensure_root_dir(path: str, mode: int = 0o700) -> None:
    """A root-owned folder (parents 0755 as created); refuses a symlink or a foreign owner."""
    parent = os.path.dirname(path.rstrip("/"))
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise fail("%s is not a folder" % path)
    if st.st_uid != 0:
        raise fail("%s is not owned by root" % path)


def atomic_write(path: str, data: bytes, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
    """A root-owned state file, written as every state file is (statefiles)."""
    write_atomic(path, data, mode, uid, gid)


def read_capped(path: str, cap: int, follow: bool = False) -> Optional[bytes]:
    """The bytes of a regular file, None if it does not exist; FAILED if larger than cap, or
    if it is a FIFO, a device or (unless follow) a symlink: O_NONBLOCK so that opening a FIFO
    never waits for a writer, and fstat before any byte is read."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | \
        (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise fail("%s is a symlink" % path) from None
        raise fail("cannot open %s: %s" % (path, e.strerror)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise fail("%s is not a regular file" % path)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(65536, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise fail("%s is larger than %d bytes" % (path, cap))
        return b"".join(chunks)
    finally:
        os.close(fd)


def lib_dir(conf) -> str:
    path = conf["Lib.Dir"]
    ensure_root_dir(path, 0o700)
    return path


class HomeFile:
    """Open files inside a user's home without following any symlink below the home.

    The home's parents are root's (resolved once); from the home down every component is
    opened with O_NOFOLLOW relative to its parent's descriptor, created 0700 and owned by the
    user where missing; an existing one must already be the user's (a root-owned folder or
    file is refused, never chowned); a file is opened O_NONBLOCK (a FIFO never blocks) and
    must be a regular file with one link (no hard-linked /etc/shadow), and ends owned by the
    user with the mode asked."""

    def __init__(self, uid: int, gid: int, home: str):
        self.uid, self.gid, self.home = uid, gid, os.path.normpath(home)

    def _open_home(self) -> int:
        parent = os.path.realpath(os.path.dirname(self.home))
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = os.open(os.path.basename(self.home), os.O_RDONLY | os.O_DIRECTORY |
                         os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except OSError as e:
            raise fail("cannot open the home folder %s: %s" % (self.home, e.strerror)) from None
        finally:
            os.close(pfd)
        st = os.fstat(fd)
        if st.st_uid not in (self.uid, 0):
            os.close(fd)
            raise fail("%s is owned by uid %d, not the user" % (self.home, st.st_uid))
        return fd

    def open_dir(self, parts: Sequence[str]) -> int:
        """A descriptor of home/parts..., creating each missing folder (0700, the user's)."""
        fd = self._open_home()
        try:
            for name in parts:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    created = True
                except FileExistsError:
                    created = False
                try:
                    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                                  os.O_CLOEXEC, dir_fd=fd)
                except OSError as e:
                    raise fail("%s/%s: %s" % (self.home, name, "a symlink or not a folder"
                                              if e.errno in (errno.ELOOP, errno.ENOTDIR)
                                              else e.strerror)) from None
                os.close(fd)
                fd = nfd
                st = os.fstat(fd)
                if created or (st.st_uid == self.uid and st.st_uid != 0):
                    os.fchown(fd, self.uid, self.gid)
                    os.fchmod(fd, 0o700)
                else:
                    raise fail("%s/%s is owned by uid %d, not the user: refused" % (
                        self.home, name, st.st_uid))
            return fd
        except BaseException:
            os.close(fd)
            raise

    def open_file(self, dir_fd: int, name: str, flags: int, mode: int) -> int:
        """An existing file of the user's, or a new one made the user's (O_EXCL: ours)."""
        base = flags & ~(os.O_CREAT | os.O_EXCL)
        always = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        created = False
        try:
            try:
                fd = os.open(name, base | always, dir_fd=dir_fd)
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    raise
                fd = os.open(name, base | always | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
                created = True
        except OSError as e:
            raise fail("%s: %s" % (name, "a symlink" if e.errno == errno.ELOOP else
                                   "a FIFO or device" if e.errno == errno.ENXIO
                                   else e.strerror)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise fail("%s is not a plain file with one link" % name)
        if created:
            os.fchown(fd, self.uid, self.gid)
        elif st.st_uid != self.uid or st.st_uid == 0:
            os.close(fd)
            raise fail("%s is owned by uid %d, not the user: refused" % (name, st.st_uid))
        return fd

    def finish(self, fd: int, mode: int) -> None:
        os.fchown(fd, self.uid, self.gid)
        os.fchmod(fd, mode)
