"""A blocking channel over a connected Unix stream socket: what workers and agentctl use.

The supervisor multiplexes many channels in one non-blocking loop and uses FrameDecoder
directly; this class is for a peer with one conversation. `call` sends a request and waits
(on the monotonic clock) for the reply with its id; requests and notices that arrive
meanwhile wait in `inbox`. Sending is thread-safe (a heartbeat thread may send notices while
the main thread calls); only one thread may receive.
"""

import array
import collections
import os
import socket
import struct
import threading
import time
from typing import List, Optional, Sequence, Tuple

from ipc import envelope, framing
from ipc.envelope import Reply
from ipc.errors import TIMEOUT, ChannelClosed, FrameError, IpcError
from ipc.verbs import check_args, check_result, lookup

RECV_CHUNK = 64 * 1024
# The ancillary buffer holds this many descriptors: the kernel installs no more from one
# message (it closes the rest and says MSG_CTRUNC, a FrameError here), and FrameDecoder
# allows no more for one frame however many messages bring them.
MAX_FDS_PER_MESSAGE = framing.MAX_FDS_PER_FRAME
# What socket.recv_fds asks for, computed once.
_ANCBUF = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * array.array("i").itemsize)
# A plain int: socket.MSG_CTRUNC is an IntFlag, and `int & IntFlag` runs enum code in Python.
_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))
# receive() leaves the socket's receive timeout alone while it ends a read at most this much
# before the deadline.
_RCVTIMEO_SLACK = 0.05
_TIMEVAL = struct.Struct("@ll")         # struct timeval: time_t and suseconds_t, both longs


def send_frame(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    if fds:
        # Descriptors travel with the first byte(s); the rest of the frame follows plainly.
        sent = socket.send_fds(sock, [data], list(fds))
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def recv_some(sock: socket.socket, msg_flags: int = 0) -> Tuple[bytes, List[int]]:
    # socket.recv_fds, less its per-call array and enum arithmetic: most messages carry no
    # descriptors, and then there is nothing to unpack.
    data, ancdata, flags, _ = sock.recvmsg(RECV_CHUNK, _ANCBUF, msg_flags)
    if not ancdata and not flags & _MSG_CTRUNC:
        return data, []
    return data, _received_fds(ancdata, flags)


def _received_fds(ancdata, flags) -> List[int]:
    fds = array.array("i")
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[:len(cdata) - (len(cdata) % fds.itemsize)])
    if flags & _MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise FrameError("too many file descriptors in one message")
    return list(fds)


class Channel:
    def __init__(self, sock: socket.socket, cap: int = framing.WORKER_CAP):
        self.sock = sock
        self.cap = cap
        self.decoder = framing.FrameDecoder(cap)
        self.inbox = collections.deque()
        self._ready = collections.deque()
        self._send_lock = threading.Lock()
        self._next_id = 1
        self._in_flight = set()   # ids of requests whose reply has not been collected
        self.closed = False
        # The socket's SO_RCVTIMEO as last set by receive(); 0 is the kernel's default (none).
        self._rcvtimeo = 0.0

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
            self._send_locked(data, fds)

    def _send_locked(self, data: bytes, fds: Sequence[int]) -> None:
        if self.closed:
            raise ChannelClosed()
        try:
            if fds:
                send_frame(self.sock, data, fds)
            else:
                self.sock.sendall(data)
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
        # One lock for the id and the send: ids reach the wire in order, at one lock's cost.
        with self._send_lock:
            ident = self._next_id
            self._next_id += 1
            self._in_flight.add(ident)
            self._send_locked(envelope.request_frame(ident, name, args, self.cap), fds)
        return ident

    def call(self, name: str, args: Optional[dict] = None, timeout: Optional[float] = None,
             fds: Sequence[int] = ()) -> Tuple[dict, List[int]]:
        """Request and wait for the reply: (result, received fds). Errors raise IpcError."""
        verb = lookup(name)
        return self.collect(name, self.request(name, args, fds, verb), timeout, verb)

    def collect(self, name: str, ident: int, timeout: Optional[float] = None,
                verb=None) -> Tuple[dict, List[int]]:
        """The reply to the earlier request `ident` of verb `name`, as `call` returns it,
        waiting up to the verb's timeout from now. A call made in between that read this
        reply left it in `inbox`. (Two requests in flight: a slow verb left to run while the
        caller goes on; the receiving is still one thread's.)"""
        verb = verb or lookup(name)
        try:
            for i, (msg, got_fds) in enumerate(self.inbox):
                if type(msg) is Reply and msg.id == ident:
                    del self.inbox[i]
                    return self._result(verb, msg, got_fds)
            deadline = time.monotonic() + (verb.timeout if timeout is None else timeout)
            # With another request in flight, descriptors are installed whatever this verb
            # is: that other reply may bring some.
            want_fds = verb.max_fds > 0 or len(self._in_flight) > 1
            while True:
                msg, got_fds = self.receive(deadline, want_fds)
                if type(msg) is Reply and msg.id == ident:
                    return self._result(verb, msg, got_fds)
                self.inbox.append((msg, got_fds))
        finally:
            self._in_flight.discard(ident)   # answered, or given up on

    @staticmethod
    def _result(verb, msg, got_fds):
        if not msg.ok:
            _close_all(got_fds)
            raise msg.error
        check_result(verb, msg.result)
        return msg.result, got_fds

    # -- receiving -----------------------------------------------------------------------
    def receive(self, deadline: Optional[float] = None, want_fds: bool = True):
        """The next message (Request, Reply or Notice) and its fds; waits until deadline.

        Without want_fds a plain recv is used: descriptors a peer sends anyway are dropped
        (closed) by the kernel, never installed in this process."""
        sock, ready = self.sock, self._ready
        while not ready:
            if self.closed:
                raise ChannelClosed()
            if deadline is None:
                if self._rcvtimeo:
                    self._set_rcvtimeo(0.0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IpcError(TIMEOUT, "no reply in time")
                # One blocking read that the kernel ends at the deadline (SO_RCVTIMEO): one
                # syscall whether or not the reply is already there, where a read that fails
                # with EAGAIN, a poll and a read again cost three and an exception. The
                # timeout is set again only when it would run past the deadline, or end
                # the read much too early (an early end just comes round this loop).
                if not remaining - _RCVTIMEO_SLACK <= self._rcvtimeo <= remaining:
                    self._set_rcvtimeo(remaining)
            try:
                if want_fds:
                    # recv_some, inline: a call less per message.
                    data, ancdata, flags, _ = sock.recvmsg(RECV_CHUNK, _ANCBUF)
                    fds = _received_fds(ancdata, flags) \
                        if ancdata or flags & _MSG_CTRUNC else []
                else:
                    data, fds = sock.recv(RECV_CHUNK), []
            except BlockingIOError:
                continue        # the receive timeout ran out: the deadline is checked above
            except FrameError:
                self.close()    # more descriptors than the buffer holds (none kept)
                raise
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
            except FrameError:
                _close_all(self.decoder.take_fds())   # e.frames' descriptors included
                self.close()
                raise
            for obj, frame_fds in frames:
                try:
                    ready.append((envelope.parse(obj), frame_fds))
                except IpcError:
                    _close_all(frame_fds)
                    self.close()
                    raise
        return ready.popleft()

    def _set_rcvtimeo(self, seconds: float) -> None:
        """The socket's receive timeout: 0 waits for ever; else whole hundredths of a second
        at most `seconds` (so that nearby deadlines share one setting), or `seconds` itself
        below that, and at most a day (the loop waits again)."""
        if seconds:
            seconds = min(seconds, 86400.0)
            rounded = int(seconds * 100) / 100
            seconds = rounded or max(seconds, 1e-6)
        whole = int(seconds)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))
        except OSError as e:
            self.close()
            raise ChannelClosed("receive failed: %s" % e) from None
        self._rcvtimeo = seconds

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
