"""A bounded Unix-socket server for a selector loop (the control socket's machinery): no
peer can exhaust it. Connections are limited per uid, root has its own that nobody else can
take, a peer that does not read its replies is closed past MAX_QUEUED_BYTES or
MAX_QUEUED_FDS, idle connections close, and out of descriptors (EMFILE) accepting pauses
instead of spinning. Peers are known by the kernel's credentials (SO_PEERCRED and
SO_PEERGROUPS), never by what they say; `admit(peer, verb)` decides who may call what.
Refusals are logged at most once per LOG_EVERY per uid.
"""

import collections
import errno
import os
import pwd
import selectors
import socket
import struct
import time
from typing import Callable, Dict, FrozenSet, NamedTuple, Optional

from ipc import envelope, framing
from ipc.channel import recv_some
from ipc.errors import DENIED, FrameError, IpcError
from ipc.verbs import Verb

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
MAX_CONNECTIONS = 32       # everyone but root, together
MAX_PER_UID = 8            # one uid other than root
MAX_ROOT = 32              # root's own: nobody else can take them
MAX_QUEUED_BYTES = 2 * framing.CONTROL_CAP   # reply bytes a peer has not read: then closed
MAX_QUEUED_FDS = 4         # descriptors (control.logs) a peer has not taken: then closed
ACCEPT_PAUSE = 1.0         # out of descriptors: stop accepting this long, then try again
IDLE = 300.0               # an idle connection is closed after this
LOG_EVERY = 10.0           # a peer's refusals are logged at most this often (no log flood)


class Peer(NamedTuple):   # not a dataclass: see config/keys.py Key
    pid: int
    uid: int
    gid: int
    groups: FrozenSet[int]

    def describe(self) -> str:
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            name = str(self.uid)
        return "%s (uid %d, pid %d)" % (name, self.uid, self.pid)


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    groups = set()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
        groups.update(struct.unpack("%dI" % (len(raw) // 4), raw))
    except OSError:
        # Older kernels: the groups the account database gives the uid.
        try:
            groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except KeyError:
            pass
    return Peer(pid, uid, gid, frozenset(groups))


def prepare_dir(path: str, gid: Optional[int]) -> None:
    """Create the socket's folder root:gid 0750 (refuse one we do not own)."""
    os.makedirs(path, mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError("%s is owned by uid %d, not by us" % (path, st.st_uid))
        if os.geteuid() == 0:
            os.fchown(fd, 0, gid if gid is not None else 0)
        os.fchmod(fd, 0o750)
    finally:
        os.close(fd)


def bind(path: str, gid: Optional[int]) -> socket.socket:
    """Listen on `path`, root:gid 0660 in a 0750 folder; refuse to start beside a live
    server."""
    prepare_dir(os.path.dirname(path), gid)
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: its supervisor is gone
        else:
            raise RuntimeError("another process is listening on %s" % path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Bind under a restrictive umask, then open up to the group: never a window of 0777.
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if os.geteuid() == 0:
        os.chown(path, 0, gid if gid is not None else 0)
    os.chmod(path, 0o660)
    sock.listen(16)
    sock.setblocking(False)
    return sock


class Conn:
    def __init__(self, sock: socket.socket, peer: Peer):
        self.sock = sock
        self.peer = peer
        self.decoder = framing.FrameDecoder(framing.CONTROL_CAP)
        self.out = collections.deque()   # [bytes, fds] not yet taken by the kernel
        self.queued_bytes = 0
        self.queued_fds = 0
        self.last_active = time.monotonic()
        self.closed = False
        self.close_after_send = False
        self.waiting = 0                 # requests answered later (not idle meanwhile)


class Server:
    """Accept, read requests, queue and send replies. `on_request(conn, request)` gets each
    well-formed request whose peer `admit` let call its verb, with valid arguments; it answers
    through send()/error(), now or later."""

    def __init__(self, listener: socket.socket, sel: selectors.BaseSelector, log,
                 admit: Callable[[Peer, str], Verb],
                 on_request: Callable[[Conn, envelope.Request], None]):
        self.listener = listener
        self.sel = sel
        self.log = log
        self.admit = admit
        self.on_request = on_request
        self.conns: Dict[int, Conn] = {}
        self.paused_until: Optional[float] = None   # accept paused (out of descriptors)
        self.starved = False                        # since the last accept that worked
        self.noted: Dict[int, list] = {}            # uid -> [last logged, left unlogged]
        self.listening = True
        self.sel.register(listener, selectors.EVENT_READ, self._on_accept)

    # ---- accepting --------------------------------------------------------------------
    def _on_accept(self, key, mask) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._pause(e)
            return
        if self.starved:
            self.starved = False
            self.log.info("event=control_accept state=resumed")
        try:
            sock.setblocking(False)
            peer = peer_of(sock)
        except OSError:
            sock.close()
            return
        if not self._admit(peer):
            self._note(peer, "event=control_refused peer=%r reason=too_many_connections")
            sock.close()
            return
        conn = Conn(sock, peer)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, self._on_conn)

    def _admit(self, peer: Peer) -> bool:
        mine = sum(1 for c in self.conns.values() if c.peer.uid == peer.uid)
        if peer.uid == 0:
            return mine < MAX_ROOT
        others = sum(1 for c in self.conns.values() if c.peer.uid != 0)
        return mine < MAX_PER_UID and others < MAX_CONNECTIONS

    def _pause(self, e: OSError) -> None:
        """No descriptor for the connection: the listener stays readable, so stop watching
        it for a moment rather than spin (logged once for the whole episode)."""
        if not self.starved:
            self.starved = True
            self.log.error("event=control_accept error=%r action=pause_%.0fs", str(e),
                           ACCEPT_PAUSE)
        self.paused_until = time.monotonic() + ACCEPT_PAUSE
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass

    def _note(self, peer: Peer, fmt: str) -> None:
        """Log a refusal (fmt takes the peer), at most once per LOG_EVERY per uid: a peer
        must not be able to fill the log by being refused."""
        now = time.monotonic()
        last = self.noted.setdefault(peer.uid, [-LOG_EVERY, 0])
        if now - last[0] < LOG_EVERY:
            last[1] += 1
            return
        suppressed = " suppressed=%d" % last[1] if last[1] else ""
        self.noted[peer.uid] = [now, 0]
        self.log.warning(fmt + suppressed, peer.describe())

    # ---- reading ----------------------------------------------------------------------
    def _on_conn(self, key, mask) -> None:
        conn = self.conns.get(key.fileobj.fileno())
        if conn is None:
            return
        if mask & selectors.EVENT_WRITE:
            self.flush(conn)
        if conn.closed or not mask & selectors.EVENT_READ:
            return
        conn.last_active = time.monotonic()
        try:
            data, fds = recv_some(conn.sock)
        except BlockingIOError:
            return
        except (OSError, FrameError):
            self.close(conn)
            return
        for fd in fds:
            os.close(fd)   # no control verb takes descriptors in
        if not data:
            self.close(conn)
            return
        try:
            frames = conn.decoder.feed(data)
        except FrameError as e:
            self.error(conn, 0, e.code, e.message, close=True)
            return
        for obj, _ in frames:
            if conn.closed:   # closed by an earlier request of this batch (queue full)
                return
            try:
                msg = envelope.parse(obj)
                if not isinstance(msg, envelope.Request):
                    raise IpcError("BAD_ENVELOPE", "control peers send requests")
                verb = self.admit(conn.peer, msg.verb)
                verb.args.check(msg.args)
            except IpcError as e:
                ident = obj.get("id") if isinstance(obj.get("id"), int) else 0
                if e.code == DENIED:
                    self._note(conn.peer, "event=control_denied peer=%%r verb=%s"
                               % str(obj.get("verb"))[:64].replace("%", "%%"))
                self.error(conn, ident, e.code, e.message,
                           close=e.code in ("BAD_FRAME", "BAD_ENVELOPE"))
                continue
            try:
                self.on_request(conn, msg)
            except IpcError as e:
                self.error(conn, msg.id, e.code, e.message)

    # ---- writing ----------------------------------------------------------------------
    def send(self, conn: Conn, msg: dict, fds=()) -> None:
        data = framing.encode(msg, framing.CONTROL_CAP)
        if conn.closed:
            for fd in fds:
                os.close(fd)
            return
        conn.out.append([data, list(fds)])
        conn.queued_bytes += len(data)
        conn.queued_fds += len(fds)
        self.flush(conn)
        if not conn.closed and (conn.queued_bytes > MAX_QUEUED_BYTES
                                or conn.queued_fds > MAX_QUEUED_FDS):
            self._note(conn.peer, "event=control_closed peer=%%r reason=replies_not_read "
                       "queued=%d fds=%d" % (conn.queued_bytes, conn.queued_fds))
            self.close(conn)

    def error(self, conn: Conn, ident: int, code: str, message: str, close=False) -> None:
        self.send(conn, envelope.error(ident if 0 <= ident <= envelope.MAX_ID else 0,
                                       code, message))
        if close and not conn.closed:
            conn.close_after_send = True
            self.flush(conn)

    def flush(self, conn: Conn) -> None:
        while conn.out:
            item = conn.out[0]
            data, fds = item
            try:
                if fds:
                    sent = socket.send_fds(conn.sock, [data], fds)
                    for fd in fds:
                        os.close(fd)
                    conn.queued_fds -= len(fds)
                    item[1] = []
                else:
                    sent = conn.sock.send(data)
            except BlockingIOError:
                break
            except OSError:
                self.close(conn)
                return
            conn.queued_bytes -= sent
            item[0] = data[sent:]
            if not item[0]:
                conn.out.popleft()
        if not conn.out and conn.close_after_send:
            self.close(conn)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        try:
            self.sel.modify(conn.sock, events, self._on_conn)
        except (KeyError, ValueError):
            pass

    def close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.sock.fileno(), None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        for _, fds in conn.out:
            for fd in fds:
                os.close(fd)
        conn.out.clear()
        conn.sock.close()

    # ---- timers -----------------------------------------------------------------------
    def next_deadline(self) -> Optional[float]:
        times = [c.last_active + IDLE for c in self.conns.values() if not c.waiting]
        if self.paused_until is not None:
            times.append(self.paused_until)
        return min(times) if times else None

    def tick(self, now: float) -> None:
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            if self.listening:
                self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept)
        for conn in list(self.conns.values()):
            if now - conn.last_active > IDLE and not conn.waiting:
                self.close(conn)

    def stop_listening(self) -> None:
        self.listening = False
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn)
