"""The IPC library: frames, envelope, schemas and the channel, over real socketpairs."""

import json
import os
import socket
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc import envelope, framing
from ipc.channel import Channel
from ipc.errors import BAD_ENVELOPE, INVALID_ARGS, TIMEOUT, UNKNOWN_VERB, ChannelClosed, \
    FrameError, IpcError
from ipc.schema import Bool, Enum, Int, List, Map, Nullable, Num, Obj, SchemaError, Str, \
    USERNAME, WORKER_NAME
from ipc.verbs import REGISTRY, check_args, lookup


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# --- framing --------------------------------------------------------------------------------

def test_round_trip_and_split_delivery():
    msg = {"v": 1, "id": 7, "verb": "control.status", "args": {"worker": "extensions"}}
    data = framing.encode(msg) * 3
    decoder = framing.FrameDecoder()
    got = []
    for i in range(len(data)):                   # one byte at a time
        got += [m for m, _ in decoder.feed(data[i:i + 1])]
    assert got == [msg] * 3
    assert decoder.pending == 0


@pytest.mark.parametrize("body, reason", [
    (b"\xff\xfe", "invalid UTF-8"),
    (b"{not json", "invalid JSON"),
    (b"[1,2]", "not an object"),
    (b'"text"', "not an object"),
    (b"{}{}", "invalid JSON"),
    (b'{"a": NaN}', "invalid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", "invalid JSON"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_bad_bodies_raise_frame_error_only(body, reason):
    with pytest.raises(FrameError, match=reason):
        framing.FrameDecoder(cap=10 ** 6).feed(frame(body))


def test_oversize_frame_is_refused_before_reading_it():
    decoder = framing.FrameDecoder(cap=framing.CONTROL_CAP)
    with pytest.raises(FrameError, match="exceeds the cap"):
        decoder.feed(struct.pack(">I", framing.CONTROL_CAP + 1))   # only the header arrived
    with pytest.raises(FrameError):
        decoder.feed(b"{}")                       # a broken decoder stays broken


def test_encode_refuses_what_the_peer_would_refuse():
    with pytest.raises(ValueError):
        framing.encode({"x": "a" * 100}, cap=50)
    with pytest.raises(ValueError):
        framing.encode({"x": float("nan")})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_never_escape_as_other_exceptions(data):
    decoder = framing.FrameDecoder(cap=1024)
    try:
        for obj, _ in decoder.feed(data):
            assert isinstance(obj, dict)
    except FrameError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                        children, max_size=4),
    max_leaves=30)


@settings(max_examples=300)
@given(st.lists(json_values, min_size=1, max_size=5), st.integers(1, 64))
def test_fuzz_any_json_body_in_any_chunking(values, chunk):
    stream = b"".join(frame(json.dumps(v).encode()) for v in values)
    decoder = framing.FrameDecoder(cap=1024 * 1024)
    got = []
    try:
        for i in range(0, len(stream), chunk):
            got += [m for m, _ in decoder.feed(stream[i:i + chunk])]
    except FrameError as e:
        got += [m for m, _ in e.frames]
        # Only non-objects or refused integers may fail, and only at the first such frame.
        bad = next(i for i, v in enumerate(values)
                   if not isinstance(v, dict) or len(json.dumps(v)) > 1024 * 1024
                   or any(len(str(abs(x))) > framing.MAX_INT_DIGITS for x in _ints(v)))
        assert len(got) == bad
        return
    assert got == values


def _ints(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _ints(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _ints(v)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 200))
def test_fuzz_truncated_frames_stay_pending(body, cut):
    data = frame(body)[: max(0, len(body) + 4 - 1 - cut % (len(body) + 4))]
    decoder = framing.FrameDecoder()
    assert decoder.feed(data) == []
    assert decoder.pending == len(data)


def test_whole_frame_fast_path_keeps_fds_and_breaks_on_error():
    decoder = framing.FrameDecoder()
    assert decoder.feed(frame(b'{"a":1}'), [7]) == [({"a": 1}, [7])]
    assert decoder.feed(frame(b' {"b": 2} \n')) == [({"b": 2}, [])]   # json's own whitespace
    with pytest.raises(FrameError):
        decoder.feed(frame(b'{"a":1} x'), [8])
    assert decoder.take_fds() == [8]              # still the owner's to close
    with pytest.raises(FrameError):
        decoder.feed(frame(b"{}"))


# --- envelope -------------------------------------------------------------------------------

@pytest.mark.parametrize("msg", [
    {"v": 2, "id": 1, "verb": "control.status", "args": {}},
    {"v": 1, "id": -1, "verb": "control.status", "args": {}},
    {"v": 1, "id": True, "verb": "control.status", "args": {}},
    {"v": 1, "id": 1, "verb": "Control.Status", "args": {}},
    {"v": 1, "id": 1, "verb": "control.status", "args": []},
    {"v": 1, "id": 1, "verb": "control.status", "args": {}, "extra": 1},
    {"v": 1, "id": 1, "ok": "yes"},
    {"v": 1, "id": 1, "ok": False, "error": {"code": "WHATEVER", "message": "x"}},
    {"v": 1},
])
def test_malformed_envelopes_are_refused(msg):
    with pytest.raises(IpcError) as info:
        envelope.parse(msg)
    assert info.value.code == BAD_ENVELOPE


def test_envelope_kinds():
    assert envelope.parse(envelope.request(3, "control.status", {})) == \
        envelope.Request(3, "control.status", {})
    assert envelope.parse(envelope.notice("worker.ready", {})) == \
        envelope.Notice("worker.ready", {})
    err = envelope.parse(envelope.error(3, "DENIED", "no"))
    assert err.ok is False and err.error.code == "DENIED"


def test_envelope_records_are_immutable():
    msg = envelope.parse(envelope.request(3, "control.status", {}))
    with pytest.raises(AttributeError):
        msg.id = 4


json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@settings(max_examples=200)
@given(st.integers(0, envelope.MAX_ID), st.sampled_from(sorted(REGISTRY)), json_objects)
def test_request_frame_is_byte_for_byte_encode_of_the_request(ident, verb, args):
    assert envelope.request_frame(ident, verb, args) == \
        framing.encode(envelope.request(ident, verb, args))


@settings(max_examples=200)
@given(st.integers(0, envelope.MAX_ID), json_objects)
def test_reply_frame_is_byte_for_byte_encode_of_the_reply(ident, result):
    assert envelope.reply_frame(ident, result) == framing.encode(envelope.reply(ident, result))


def test_reply_frame_refuses_what_encode_refuses():
    with pytest.raises(ValueError):
        envelope.reply_frame(1, {"x": "a" * 100}, cap=50)
    with pytest.raises(ValueError):
        envelope.reply_frame(1, {"x": float("nan")})


# --- schemas and verbs ----------------------------------------------------------------------

def test_schemas_are_closed_and_bounded():
    schema = Obj({"name": USERNAME, "n": Int(0, 10)}, {"tags": List(Str(5), 2)})
    schema.check({"name": "azureuser", "n": 3})
    for bad in ({"name": "azureuser"}, {"name": "azureuser", "n": 3, "x": 1},
                {"name": "Root;rm", "n": 3}, {"name": "a", "n": True}, {"name": "a", "n": 11},
                {"name": "a", "n": 1, "tags": ["a", "b", "c"]}, {"name": "a", "n": 1, "tags": ["abcdef"]}):
        with pytest.raises(SchemaError):
            schema.check(bad)


SAMPLE_SCHEMAS = [
    Obj({"name": USERNAME, "n": Int(0, 10)}, {"tags": List(Str(5), 2), "on": Bool()}),
    Obj({"w": Nullable(WORKER_NAME), "e": Enum("a", "b")}, {"x": Num(0, 1.5)}),
    Map(Str(8, 1, r"[a-z]+"), Obj({"k": Int(-3, 3)}), 2),
    Obj(),
] + [verb.args for verb in REGISTRY.values()] + [verb.result for verb in REGISTRY.values()]

schema_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 20) | st.floats(allow_nan=True)
    | st.sampled_from(["", "a", "b", "abc", "azureuser", "extensions", "Root;rm", "x" * 40]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "n", "tags", "on", "w", "e", "x", "k", "worker", "path",
                         "message", "abc", "unknown"]), children, max_size=4),
    max_leaves=12)


@settings(max_examples=500)
@given(st.sampled_from(SAMPLE_SCHEMAS), schema_values)
def test_any_value_is_accepted_or_refused_with_a_path_never_a_crash(schema, value):
    """One walk decides and explains: check refuses with a SchemaError (nothing else escapes
    it: no TypeError, no KeyError), fits agrees with it, and what is accepted survives the
    wire (JSON) and is accepted again."""
    try:
        schema.check(value)
        accepted = True
    except SchemaError as e:
        accepted = False
        assert e.code == INVALID_ARGS and ": " in e.message
    assert schema.fits(value) == accepted
    if accepted and value == value:   # NaN is never equal to itself: refused anyway
        assert schema.fits(json.loads(json.dumps(value)))


def test_a_refusal_names_the_place_and_the_reason():
    schema = Obj({"name": USERNAME, "n": Int(0, 10)}, {"tags": List(Str(5), 2),
                                                       "m": Map(Str(8, 1, r"[a-z]+"), Bool(), 2)})
    cases = [({"name": "a", "n": 1, "tags": ["ok", "toolong"]}, "tags[1]: length 7 outside 0..5"),
             ({"name": "a", "n": 1, "m": {"A": True}}, "m.<key>: does not match [a-z]+"),
             ({"name": "a", "n": 1, "m": {"a": 1}}, "m.a: expected true or false"),
             ({"name": "a", "n": 1, "x": 1}, "args: unknown key 'x'"),
             ({"name": "a"}, "args: missing key 'n'"),
             ({"name": "Root;rm", "n": 1}, "name: does not match"),
             ([], "args: expected an object")]
    for value, message in cases:
        with pytest.raises(SchemaError) as info:
            schema.check(value)
        assert info.value.message.startswith(message), (value, info.value.message)
        assert not schema.fits(value)


def test_remembered_matches_do_not_widen_a_pattern():
    class Sly(str):
        def __eq__(self, other):
            return True

        def __hash__(self):
            return hash("azureuser")

    USERNAME.check("azureuser")                  # now remembered
    with pytest.raises(SchemaError):
        USERNAME.check(Sly("Root;rm"))            # a look-alike is matched, not looked up
    with pytest.raises(SchemaError):
        Obj({"name": USERNAME}).check({"name": Sly("Root;rm")})


def test_every_declared_verb_has_doc_and_valid_name():
    assert {"worker.hello", "worker.ready", "worker.heartbeat", "control.status",
            "control.restart", "control.logs"} <= set(REGISTRY)
    for name, verb in REGISTRY.items():
        assert envelope.VERB_RE.fullmatch(name)
        assert len(verb.doc) > 10, name


def test_unknown_verb_and_bad_args():
    with pytest.raises(IpcError) as info:
        lookup("control.format_disk")
    assert info.value.code == UNKNOWN_VERB
    with pytest.raises(IpcError) as info:
        check_args(lookup("control.restart"), {"worker": "../etc"})
    assert info.value.code == INVALID_ARGS


# --- channel over a real socketpair ---------------------------------------------------------

def serve_once(sock, handler):
    peer = Channel(sock)
    def run():
        try:
            while True:
                msg, fds = peer.receive()
                handler(peer, msg, fds)
        except ChannelClosed:
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_call_reply_and_fd_passing(tmp_path):
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log = tmp_path / "w.log"
    log.write_text("line one\n")

    def handler(peer, msg, fds):
        if isinstance(msg, envelope.Request) and msg.verb == "control.logs":
            fd = os.open(str(log), os.O_RDONLY)
            peer.reply(msg.id, {"path": str(log)}, fds=[fd])
            os.close(fd)
        elif isinstance(msg, envelope.Request):
            peer.reply_error(msg.id, "NOT_FOUND", "no worker %s" % msg.args.get("worker"))

    serve_once(right, handler)
    client = Channel(left)
    result, fds = client.call("control.logs", {"worker": "extensions"}, timeout=5)
    assert result == {"path": str(log)} and len(fds) == 1
    assert os.read(fds[0], 100) == b"line one\n"
    os.close(fds[0])
    with pytest.raises(IpcError) as info:
        client.call("control.stop", {"worker": "nosuch"}, timeout=5)
    assert info.value.code == "NOT_FOUND"
    client.close()


def test_call_times_out_and_garbage_closes_the_channel():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = Channel(left)
    with pytest.raises(IpcError) as info:
        client.call("control.version", timeout=0.2)
    assert info.value.code == TIMEOUT
    right.sendall(struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    with pytest.raises(FrameError):
        client.receive()
    assert client.closed
    with pytest.raises(ChannelClosed):
        client.notify("worker.ready")


def test_deadline_holds_while_other_messages_keep_arriving():
    """The receive timeout is reset as the deadline nears: notices every 50 ms neither
    extend a call past its deadline nor end it early."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = Channel(left)
    stop = threading.Event()

    def chatter():
        while not stop.wait(0.05):
            right.sendall(framing.encode(envelope.notice("worker.heartbeat", {})))
    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    started = time.monotonic()
    with pytest.raises(IpcError) as info:
        client.call("control.version", timeout=0.3)
    elapsed = time.monotonic() - started
    stop.set()
    thread.join()
    assert info.value.code == TIMEOUT
    assert 0.3 <= elapsed < 0.45
    assert len(client.inbox) >= 3
    # Without a deadline a receive waits as long as it takes, past the last timeout set.
    timer = threading.Timer(0.4, right.sendall, [framing.encode(envelope.notice(
        "worker.ready", {}))])
    client.inbox.clear()
    while True:                                   # what the chatter left unread
        right.sendall(framing.encode(envelope.notice("worker.status", {"message": "end"})))
        msg, _ = client.receive()
        if msg == envelope.Notice("worker.status", {"message": "end"}):
            break
    timer.start()
    assert client.receive() == (envelope.Notice("worker.ready", {}), [])
    timer.join()
    client.close()
    right.close()


def test_peer_death_mid_frame_is_reported():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = Channel(left)
    right.sendall(struct.pack(">I", 100) + b"{")
    right.close()
    with pytest.raises(ChannelClosed, match="mid-frame"):
        client.receive()


def test_call_reads_a_waiting_reply_and_waits_for_a_late_one():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = Channel(left)
    # Already there when call() first reads (no wait at all).
    right.sendall(framing.encode(envelope.reply(1, {"version": "1", "python": "3",
                                                    "waagent_version": "2"})))
    assert client.call("control.version", timeout=5)[0]["version"] == "1"
    # Arrives while call() waits, and the deadline is far beyond what poll() takes.
    timer = threading.Timer(0.1, right.sendall, [framing.encode(envelope.reply(2, {
        "version": "2", "python": "3", "waagent_version": "2"}))])
    timer.start()
    assert client.call("control.version", timeout=10 ** 9)[0]["version"] == "2"
    timer.join()
    client.close()
    right.close()
