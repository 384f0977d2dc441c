"""Frames: a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object.

Each channel has a hard cap on a frame (worker channels 1 MiB, the control socket 64 KiB):
a peer that announces more is cut off before anything is read. Decoding never raises anything
but FrameError, whatever the bytes, so a reader can close the channel cleanly.

File descriptors (SCM_RIGHTS) are capped too: at most MAX_FDS_PER_FRAME wait for the frame
they came with, however many messages it is sent in. A peer that sends more is cut off and
the extra ones are closed at once: descriptors sent with a frame that never completes would
otherwise pile up in the reader until it cannot open a file (EMFILE), and then cannot start
a worker.
"""

import json
import os
import struct
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import List, Tuple

from ipc.errors import FrameError

HEADER = struct.Struct(">I")
_unpack_from = HEADER.unpack_from
WORKER_CAP = 1024 * 1024
CONTROL_CAP = 64 * 1024
# No verb passes more than two (the spawner's channel and log pipe); the receiving side's
# ancillary buffer (ipc/channel.py) holds this many and the kernel drops any beyond.
MAX_FDS_PER_FRAME = 4
# Integers beyond this many digits are not a size, an id or a pid: refuse them before int()
# spends quadratic time on them.
MAX_INT_DIGITS = 20


def _parse_int(text):
    # Called for every integer of every frame: the lstrip only when the length is in doubt.
    if len(text) > MAX_INT_DIGITS and len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("integer too large")
    return int(text)


def _parse_constant(name):
    raise ValueError("%s is not JSON" % name)


_decoder = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)
# The C scanner behind _decoder: decode() wraps it in two whitespace regex matches that a
# frame we wrote never needs (see decode_body).
_scan_once = _decoder.scan_once
# ASCII escapes keep every frame valid UTF-8 whatever the strings hold, and are the fast path.
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                            check_circular=False)
# JSONEncoder.encode builds this same C encoder afresh on every call; build it once (None on
# a Python without the _json accelerator).
_c_encode = c_make_encoder and c_make_encoder(
    None, _encoder.default, encode_basestring_ascii, None, _encoder.key_separator,
    _encoder.item_separator, False, False, False)


def encode(obj: dict, cap: int = WORKER_CAP) -> bytes:
    """One frame. Raises ValueError for what the peer would refuse (too large, not an object)."""
    if not isinstance(obj, dict):
        raise ValueError("a frame holds a JSON object")
    if _c_encode is not None:
        body = "".join(_c_encode(obj, 0)).encode("utf-8")
    else:
        body = _encoder.encode(obj).encode("utf-8")
    if len(body) > cap:
        raise ValueError("frame of %d bytes exceeds the cap of %d" % (len(body), cap))
    # Header and body in one bytes object: one sendall, one segment.
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameError("invalid UTF-8 at byte %d" % e.start) from None
    # A frame as our encoder writes it is one object and nothing around it: scan it directly.
    # Anything else (whitespace around it, trailing data, any error) takes json's own decode
    # so that what is accepted and every error message stay exactly json's.
    try:
        obj, end = _scan_once(text, 0)
        if end == len(text) and type(obj) is dict:
            return obj
    except RecursionError:
        raise FrameError("JSON nested too deeply") from None
    except (StopIteration, ValueError):
        pass
    try:
        obj = _decoder.decode(text)
    except RecursionError:
        raise FrameError("JSON nested too deeply") from None
    except ValueError as e:
        raise FrameError("invalid JSON: %s" % str(e)[:200]) from None
    if not isinstance(obj, dict):
        raise FrameError("frame holds a %s, not an object" % type(obj).__name__)
    return obj


class FrameDecoder:
    """Incremental: feed whatever bytes arrived, get the complete frames back.

    On a bad frame it raises FrameError, whose `frames` holds the good frames that came
    before it in the same feed; the decoder then refuses any further bytes.

    File descriptors received with the bytes (SCM_RIGHTS) are attached to the frame they were
    sent with. Each sender sends a frame with descriptors in one sendmsg, and a read of a Unix
    stream socket ends with the first message that carries descriptors: so they belong to the
    last frame that begins in the bytes of that read (or, if none begins there, to the frame
    still incomplete from earlier reads). More than max_fds for one frame is a FrameError; the
    descriptors of that message are closed at once, the others stay the owner's (take_fds),
    as do those of the frames in a FrameError's `frames`: the owner closes them all with
    take_fds when it closes the channel.
    """

    def __init__(self, cap: int = WORKER_CAP, max_fds: int = MAX_FDS_PER_FRAME):
        self.cap = cap
        self.max_fds = max_fds
        self._buffer = bytearray()
        self._fds: List[int] = []   # the incomplete frame's (the one _buffer starts)
        self.broken = False

    def feed(self, data: bytes, fds=()) -> List[Tuple[dict, List[int]]]:
        if self.broken:
            _close(fds)
            raise FrameError("channel already failed")
        size = len(data)
        if not self._buffer and size >= 4 and _unpack_from(data)[0] == size - 4 <= self.cap:
            # What nearly every read brings: exactly one whole frame.
            if len(fds) > self.max_fds:
                self._too_many(fds)
            try:
                obj = decode_body(data[4:])
            except FrameError:
                self.broken = True
                self._fds = list(fds)
                raise
            return [(obj, list(fds))]
        old = len(self._buffer)   # bytes of a frame begun in an earlier read
        if old:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        size, cap = len(data), self.cap
        # Where each frame begins (the headers only), to know whose the new descriptors are.
        target, offset = 0, 0
        while offset < size:
            if offset >= old:
                target = offset
            if size - offset < 4:
                break
            (length,) = _unpack_from(data, offset)
            if length > cap:
                break   # raised below, after the frames before it
            offset += 4 + length
        earlier, new = self._fds, list(fds)
        self._fds = []
        if len(new) + (len(earlier) if target == 0 else 0) > self.max_fds:
            self._fds = earlier
            self._too_many(new)

        def fds_of(start):
            return (earlier if start == 0 else []) + (new if start == target else [])
        frames = []
        offset = 0
        try:
            # Frames are cut straight out of what arrived; only an incomplete tail is kept.
            while size - offset >= 4:
                (length,) = _unpack_from(data, offset)
                if length > cap:
                    raise FrameError("frame of %d bytes exceeds the cap of %d" % (length, cap))
                end = offset + 4 + length
                if end > size:
                    break
                obj = decode_body(data[offset + 4:end])
                frames.append((obj, fds_of(offset)))
                offset = end
        except FrameError as e:
            # The frames that were whole before the bad one still happened; the caller may
            # act on them (e.frames) before it closes the channel. Their descriptors, and
            # those of the frames not reached, go back to the owner's take_fds, so closing
            # the channel closes every one of them.
            self.broken = True
            given = {fd for _, frame_fds in frames for fd in frame_fds}
            self._fds = [fd for _, frame_fds in frames for fd in frame_fds] + \
                [fd for fd in earlier + new if fd not in given]
            e.frames = [(obj, []) for obj, _ in frames]
            raise
        if offset < size:
            self._buffer += data[offset:]
            self._fds = fds_of(offset)
        return frames

    def _too_many(self, fds) -> None:
        _close(fds)
        self.broken = True
        raise FrameError("more than %d file descriptors for one frame" % self.max_fds)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (non-zero at EOF means the peer died mid-frame)."""
        return len(self._buffer)

    def take_fds(self) -> List[int]:
        """Descriptors never attached to a frame; the owner must close them."""
        fds, self._fds = self._fds, []
        return fds


def _close(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
