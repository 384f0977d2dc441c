"""Two requests in flight on one channel (ipc/channel.py `collect`): a slow verb begun, other
calls made meanwhile, its reply taken later — as the provisioning worker leaves the resource
disk and the host keys to the broker while it goes on. A real socketpair; the peer answers
the way the supervisor may: the slow reply first, and with a descriptor."""

import os
import socket
import threading

import pytest

from ipc import envelope, framing
from ipc.errors import IpcError
from ipc.channel import Channel, send_frame

CERT = "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n-----END CERTIFICATE-----\n"
DISK = {"skipped": "ResourceDisk.Format=n", "device": None, "mount_point": None,
        "formatted": False, "already_mounted": False, "swap_mb": 0, "swap_error": None,
        "seconds": {"detect": 0.0, "partition": 0.0, "mkfs": 0.0, "mount": 0.0, "swap": 0.0}}


def peer(sock, script):
    """Read `len(script)` requests, then answer them in the order `script` gives:
    [(index of the request, result, fds)]."""
    peer_channel = Channel(sock)
    requests = [peer_channel.receive()[0] for _ in script]
    for index, result, fds in script:
        frame = framing.encode(envelope.reply(requests[index].id, result), framing.WORKER_CAP)
        if fds:
            send_frame(sock, frame, fds)
        else:
            sock.sendall(frame)
    return requests


def test_a_begun_request_is_collected_after_a_call_that_read_its_reply():
    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    key_fd = os.open(os.devnull, os.O_RDONLY)
    seen = {}
    # The peer answers the transport key (sent second, with a descriptor) only after the
    # resource disk (sent first): the call for the key reads the disk's reply first.
    t = threading.Thread(target=lambda: seen.update(requests=peer(theirs, [
        (0, DISK, []), (1, {"certificate": CERT}, [key_fd])])))
    t.start()
    disk = channel.request("resource_disk.activate", {})
    result, fds = channel.call("platform.transport_key", {}, timeout=5)
    t.join(5)
    assert result == {"certificate": CERT} and len(fds) == 1
    os.close(fds[0])
    assert [m.verb for m in seen["requests"]] == ["resource_disk.activate",
                                                  "platform.transport_key"]
    assert channel.collect("resource_disk.activate", disk, timeout=1) == (DISK, [])
    assert not channel.inbox
    os.close(key_fd)


def test_a_reply_with_a_descriptor_is_not_lost_to_a_call_that_expects_none():
    # The key begun, then a verb without descriptors called: its read must install the
    # key's descriptor (a plain recv would let the kernel drop it) and keep it for collect.
    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    key_fd = os.open(os.devnull, os.O_RDONLY)
    t = threading.Thread(target=peer, args=(theirs, [
        (0, {"certificate": CERT}, [key_fd]), (1, DISK, [])]))
    t.start()
    key = channel.request("platform.transport_key", {})
    assert channel.call("resource_disk.activate", {}, timeout=5) == (DISK, [])
    t.join(5)
    result, fds = channel.collect("platform.transport_key", key, timeout=1)
    assert result == {"certificate": CERT} and len(fds) == 1
    assert os.path.samestat(os.fstat(fds[0]), os.stat(os.devnull))
    os.close(fds[0])
    os.close(key_fd)


def test_an_error_reply_to_a_begun_request_raises_at_collect():
    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    t = threading.Thread(target=lambda: (Channel(theirs).receive(), theirs.sendall(
        framing.encode(envelope.error(1, "FAILED", "no disk"), framing.WORKER_CAP))))
    t.start()
    ident = channel.request("resource_disk.activate", {})
    t.join(5)
    with pytest.raises(IpcError) as e:
        channel.collect("resource_disk.activate", ident, timeout=5)
    assert e.value.code == "FAILED" and "no disk" in e.value.message
