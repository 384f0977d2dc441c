"""Descriptors per frame are capped (ipc/framing.py, ipc/channel.py): descriptors sent with a
frame that never completes must not pile up in the reader, which would then fail to open
anything (EMFILE) — another worker's respawn. Real socketpairs and real descriptors."""

import os
import socket
import struct

import pytest

from ipc import framing
from ipc.channel import Channel, recv_some
from ipc.errors import FrameError


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def null_fds(n):
    return [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]


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
    before = open_fds()
    fd = os.open(os.devnull, os.O_RDONLY)
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
    assert open_fds() <= before - 1   # our end closed, nothing received kept


def test_more_descriptors_than_the_buffer_holds_in_one_message_are_never_kept():
    a, b = socket.socketpair()
    a.setblocking(False)
    before = open_fds()
    fd = os.open(os.devnull, os.O_RDONLY)
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
