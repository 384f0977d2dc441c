"""A blocking channel over a connected Unix stream socket: what workers and agentctl use.

The supervisor multiplexes many channels in one non-blocking loop and uses FrameDecoder
directly; this class is for a peer with one conversation. `call` sends a request and waits
(on the monotonic clock) for the reply with its id; requests and notices that arrive
meanwhile wait in `inbox`. Sending is thread-safe (a heartbeat thread may send notices while
the main thread calls); only one thread may receive.
"""

import collections
import os
import select
import socket
import threading
import time
from typing import List, Optional, Sequence, Tuple

from ipc import envelope, framing
from ipc.errors import TIMEOUT, ChannelClosed, FrameError, IpcError
from ipc.verbs import check_args, check_result, lookup

RECV_CHUNK = 64 * 1024
MAX_FDS_PER_MESSAGE = 4


def send_frame(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    if fds:
        # Descriptors travel with the first byte(s); the rest of the frame follows plainly.
        sent = socket.send_fds(sock, [data], list(fds))
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def recv_some(sock: socket.socket) -> Tuple[bytes, List[int]]:
    data, fds, flags, _ = socket.recv_fds(sock, RECV_CHUNK, MAX_FDS_PER_MESSAGE)
    if flags & getattr(socket, "MSG_CTRUNC", 0):
        for fd in fds:
            os.close(fd)
        raise FrameError("too many file descriptors in one message")
    return data, list(fds)


class Channel:
    def __init__(self, sock: socket.socket, cap: int = framing.WORKER_CAP):
        self.sock = sock
        self.cap = cap
        self.decoder = framing.FrameDecoder(cap)
        self.inbox = collections.deque()
        self._ready = collections.deque()
        self._send_lock = threading.Lock()
        self._next_id = 1
        self.closed = False

    @classmethod
    def connect(cls, path: str, cap: int = framing.CONTROL_CAP, timeout: float = 5.0):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock, cap)

    @classmethod
    def from_fd(cls, fd: int, cap: int = framing.WORKER_CAP):
        return cls(socket.socket(fileno=fd), cap)

    # -- sending -------------------------------------------------------------------------
    def send(self, msg: dict, fds: Sequence[int] = ()) -> None:
        data = framing.encode(msg, self.cap)
        with self._send_lock:
            if self.closed:
                raise ChannelClosed()
            try:
                send_frame(self.sock, data, fds)
            except OSError as e:
                raise ChannelClosed("send failed: %s" % e) from None

    def notify(self, name: str, args: Optional[dict] = None) -> None:
        verb = lookup(name)
        args = args or {}
        check_args(verb, args)
        self.send(envelope.notice(name, args))

    def request(self, name: str, args: Optional[dict] = None, fds: Sequence[int] = (),
                verb=None) -> int:
        """Send a request and return its id (for callers that collect replies themselves)."""
        verb = verb or lookup(name)
        args = args or {}
        # Our own bad arguments are our bug: fail here, before the peer ends us for them.
        check_args(verb, args)
        with self._send_lock:
            ident = self._next_id
            self._next_id += 1
        self.send(envelope.request(ident, name, args), fds)
        return ident

    def call(self, name: str, args: Optional[dict] = None, timeout: Optional[float] = None,
             fds: Sequence[int] = ()) -> Tuple[dict, List[int]]:
        """Request and wait for the reply: (result, received fds). Errors raise IpcError."""
        verb = lookup(name)
        ident = self.request(name, args, fds, verb)
        deadline = time.monotonic() + (verb.timeout if timeout is None else timeout)
        while True:
            msg, got_fds = self.receive(deadline, want_fds=verb.max_fds > 0)
            if isinstance(msg, envelope.Reply) and msg.id == ident:
                if not msg.ok:
                    _close_all(got_fds)
                    raise msg.error
                check_result(verb, msg.result)
                return msg.result, got_fds
            self.inbox.append((msg, got_fds))

    # -- receiving -----------------------------------------------------------------------
    def receive(self, deadline: Optional[float] = None, want_fds: bool = True):
        """The next message (Request, Reply or Notice) and its fds; waits until deadline.

        Without want_fds a plain recv is used: descriptors a peer sends anyway are dropped
        (closed) by the kernel, never installed in this process."""
        while not self._ready:
            if self.closed:
                raise ChannelClosed()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IpcError(TIMEOUT, "no reply in time")
                readable, _, _ = select.select([self.sock], [], [], remaining)
                if not readable:
                    continue
            try:
                if want_fds:
                    data, fds = recv_some(self.sock)
                else:
                    data, fds = self.sock.recv(RECV_CHUNK), []
            except OSError as e:
                self.close()
                raise ChannelClosed("receive failed: %s" % e) from None
            if not data:
                _close_all(fds + self.decoder.take_fds())
                self.close()
                raise ChannelClosed("peer closed the channel"
                                    + (" mid-frame" if self.decoder.pending else ""))
            try:
                frames = self.decoder.feed(data, fds)
            except FrameError as e:
                for _, frame_fds in e.frames:
                    _close_all(frame_fds)
                _close_all(self.decoder.take_fds())
                self.close()
                raise
            for obj, frame_fds in frames:
                try:
                    self._ready.append((envelope.parse(obj), frame_fds))
                except IpcError:
                    _close_all(frame_fds)
                    self.close()
                    raise
        return self._ready.popleft()

    def reply(self, ident: int, result: dict, fds: Sequence[int] = ()) -> None:
        self.send(envelope.reply(ident, result), fds)

    def reply_error(self, ident: int, code: str, message: str) -> None:
        self.send(envelope.error(ident, code, message))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def fileno(self) -> int:
        return self.sock.fileno()


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
