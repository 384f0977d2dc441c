"""Descriptors per frame are capped (ipc/framing.py, ipc/channel.py): descriptors sent with a
frame that never completes must not pile up in the reader, which would then fail to open
anything (EMFILE) — another worker's respawn. Real socketpairs and real descriptors."""

import atexit
import os
import socket
import struct
import tempfile

import pytest

from ipc import framing
from ipc.channel import Channel, recv_some
from ipc.errors import FrameError


# The descriptors these tests send are opened on a file of their own, and only descriptors of
# that file (and of the sockets named) are counted: the whole process's count moves with any
# other thread that opens or closes something (in the full run, what earlier tests left).
_fd, MARKER = tempfile.mkstemp(prefix="framing-fds.")
os.close(_fd)
atexit.register(os.unlink, MARKER)


def sock_link(sock):
    """What /proc/self/fd shows for a descriptor of this socket."""
    return "socket:[%d]" % os.fstat(sock.fileno()).st_ino


def open_fds(*links):
    """How many of this process's descriptors are on MARKER or on one of these links."""
    wanted = {MARKER, *links}
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink("/proc/self/fd/" + name) in wanted
        except OSError:
            pass   # closed meanwhile (the listing's own descriptor among them)
    return count


def marker_fd():
    return os.open(MARKER, os.O_RDONLY)


def null_fds(n):
    return [marker_fd() for _ in range(n)]


def test_more_descriptors_than_the_cap_for_one_pending_frame_break_the_decoder():
    decoder = framing.FrameDecoder()
    before = open_fds()
    first = null_fds(framing.MAX_FDS_PER_FRAME)
    assert decoder.feed(struct.pack(">I", 100), first) == []
    extra = null_fds(1)
    with pytest.raises(FrameError, match="more than 4 file descriptors"):
        decoder.feed(b" ", extra)
    assert open_fds() == before + len(first)       # the extra one closed at once
    assert sorted(decoder.take_fds()) == sorted(first)   # the rest: the owner's to close
    for fd in first:
        os.close(fd)
    with pytest.raises(FrameError):
        decoder.feed(b" ", null_fds(1))            # broken: closed too, nothing kept
    assert open_fds() == before


def test_the_descriptors_of_whole_frames_before_a_bad_one_go_back_to_the_owner():
    decoder = framing.FrameDecoder()
    good = framing.encode({"a": 1})
    bad = struct.pack(">I", 3) + b"x}{"
    fds = null_fds(2)
    with pytest.raises(FrameError) as e:
        decoder.feed(good + bad, fds)
    assert e.value.frames == [({"a": 1}, [])]
    assert sorted(decoder.take_fds()) == sorted(fds)
    for fd in fds:
        os.close(fd)


def test_a_peer_sending_descriptors_with_a_frame_it_never_completes_is_cut_off():
    a, b = socket.socketpair()
    ours = Channel(a)
    ours_link = sock_link(a)
    before = open_fds(ours_link)
    fd = marker_fd()
    socket.send_fds(b, [struct.pack(">I", 4000)], [fd] * 4)
    for _ in range(50):
        try:
            socket.send_fds(b, [b" "], [fd] * 4)
        except OSError:
            break
    with pytest.raises(FrameError):
        ours.receive(deadline=None)
        ours.receive(deadline=None)
    os.close(fd)
    b.close()
    assert open_fds(ours_link) <= before - 1   # our end closed, nothing received kept


def test_more_descriptors_than_the_buffer_holds_in_one_message_are_never_kept():
    a, b = socket.socketpair()
    a.setblocking(False)
    before = open_fds()
    fd = marker_fd()
    socket.send_fds(b, [b"\0"], [fd] * 64)
    os.close(fd)
    with pytest.raises(FrameError, match="too many"):
        recv_some(a)
    assert open_fds() == before
    a.close()
    b.close()


def test_a_channel_that_got_too_many_descriptors_in_one_message_is_closed():
    a, b = socket.socketpair()
    ours = Channel(a)
    fd = os.open(os.devnull, os.O_RDONLY)
    socket.send_fds(b, [b"\0"], [fd] * 16)
    os.close(fd)
    with pytest.raises(FrameError):
        ours.receive(deadline=None)
    assert ours.closed
    b.close()


def test_descriptors_go_to_the_frame_they_were_sent_with_when_one_read_brings_two():
    # A frame without descriptors (a heartbeat notice, a reply) and then one with them, sent
    # back to back: a read of the stream brings both (it ends with the message that carries
    # descriptors). They are the second frame's; given to the first, a verb that takes none
    # would be a violation and the second would lack its descriptor.
    a, b = socket.socketpair()
    fd = os.open(os.devnull, os.O_RDONLY)
    b.sendall(framing.encode({"n": 1}))
    socket.send_fds(b, [framing.encode({"n": 2})], [fd])
    b.sendall(framing.encode({"n": 3}))
    decoder = framing.FrameDecoder()
    frames = []
    while len(frames) < 3:
        data, fds = recv_some(a)
        frames += decoder.feed(data, fds)
    assert [(obj["n"], len(fds)) for obj, fds in frames] == [(1, 0), (2, 1), (3, 0)]
    assert os.path.samestat(os.fstat(frames[1][1][0]), os.stat(os.devnull))
    os.close(frames[1][1][0])
    os.close(fd)


def test_descriptors_wait_for_their_frame_across_reads():
    decoder = framing.FrameDecoder()
    one, two = framing.encode({"n": 1}), framing.encode({"n": 2, "pad": "x" * 100})
    fds = null_fds(1)
    # The first frame whole, the second begun, with its descriptor: the second's.
    assert decoder.feed(one + two[:10], fds) == [({"n": 1}, [])]
    # The rest of the second, with no new descriptor.
    assert decoder.feed(two[10:]) == [({"n": 2, "pad": "x" * 100}, fds)]
    # A frame completed in a read that begins no other: the descriptors are that frame's.
    more = null_fds(2)
    assert decoder.feed(two[:50]) == []
    assert decoder.feed(two[50:], more) == [({"n": 2, "pad": "x" * 100}, more)]
    for fd in fds + more:
        os.close(fd)
