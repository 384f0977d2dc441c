"""The versioned envelope around every frame: request, reply, notice.

- request `{"v":1,"id":N,"verb":"domain.action","args":{...}}`
- reply   `{"v":1,"id":N,"ok":true,"result":{...}}` or
          `{"v":1,"id":N,"ok":false,"error":{"code":"...","message":"..."}}`
- notice  `{"v":1,"notice":"domain.event","args":{...}}` (no reply)

`parse` turns a decoded frame into one of the three records or raises BAD_ENVELOPE; it checks
shape only. Whether the verb exists, may be called, and has good arguments is ipc.verbs' job.
"""

import re
from json.encoder import encode_basestring_ascii as _json_str
from typing import NamedTuple, Union

from ipc import framing
from ipc.errors import BAD_ENVELOPE, CODES, IpcError

VERSION = 1
MAX_ID = 2 ** 53  # stays exact in every JSON implementation
VERB_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,47}")
MAX_ERROR_MESSAGE = 2048
# Names already seen to match VERB_RE: a set lookup instead of a regex per message. Bounded, so
# a peer inventing names cannot grow it; past the bound names are simply matched each time.
_GOOD_NAMES = set()
_GOOD_NAMES_MAX = 1024


# NamedTuples: as immutable as frozen dataclasses, and three times cheaper to build (two are
# built per round trip).
class Request(NamedTuple):
    id: int
    verb: str
    args: dict


class Reply(NamedTuple):
    id: int
    ok: bool
    result: dict
    error: Union[IpcError, None]


class Notice(NamedTuple):
    notice: str
    args: dict


# Builds a record from a tuple in C; Request(...) goes through a generated Python __new__.
_tuple_new = tuple.__new__


def request(id: int, verb: str, args: dict) -> dict:
    return {"v": VERSION, "id": id, "verb": verb, "args": args}


def request_frame(id: int, verb: str, args: dict, cap: int = framing.WORKER_CAP) -> bytes:
    """framing.encode(request(id, verb, args), cap), byte for byte, for the channel's hot path:
    the envelope's own keys are formatted and only args goes through the JSON encoder, which
    spends as long on the four envelope keys as on a small args object."""
    if _c_encode is None or type(id) is not int:
        return framing.encode(request(id, verb, args), cap)
    body = ('{"v":%d,"id":%d,"verb":%s,"args":%s}' % (
        VERSION, id, _json_str(verb), "".join(_c_encode(args, 0)))).encode("utf-8")
    if len(body) > cap:
        raise ValueError("frame of %d bytes exceeds the cap of %d" % (len(body), cap))
    return _pack_header(len(body)) + body


_c_encode, _pack_header = framing._c_encode, framing.HEADER.pack


def reply(id: int, result: dict) -> dict:
    return {"v": VERSION, "id": id, "ok": True, "result": result}


def reply_frame(id: int, result: dict, cap: int = framing.WORKER_CAP) -> bytes:
    """framing.encode(reply(id, result), cap), byte for byte: the supervisor's reply path,
    formatted around the JSON of the result as request_frame is around its args."""
    if _c_encode is None or type(id) is not int:
        return framing.encode(reply(id, result), cap)
    body = ('{"v":%d,"id":%d,"ok":true,"result":%s}' % (
        VERSION, id, "".join(_c_encode(result, 0)))).encode("utf-8")
    if len(body) > cap:
        raise ValueError("frame of %d bytes exceeds the cap of %d" % (len(body), cap))
    return _pack_header(len(body)) + body


def error(id: int, code: str, message: str) -> dict:
    return {"v": VERSION, "id": id, "ok": False,
            "error": {"code": code, "message": message[:MAX_ERROR_MESSAGE]}}


def notice(name: str, args: dict) -> dict:
    return {"v": VERSION, "notice": name, "args": args}


def _bad(message):
    return IpcError(BAD_ENVELOPE, message)


def _id(msg):
    value = msg.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise _bad("id must be an integer 0..2^53")
    return value


def _name(value, what):
    if type(value) is str and value in _GOOD_NAMES:
        return value
    if not isinstance(value, str) or not VERB_RE.fullmatch(value):
        raise _bad("%s must look like domain.action" % what)
    if type(value) is str and len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(value)
    return value


def _args(msg, key):
    value = msg.get(key, {})
    if not isinstance(value, dict):
        raise _bad("%s must be an object" % key)
    return value


def parse(msg: dict) -> Union[Request, Reply, Notice]:
    if msg.get("v") != VERSION:
        raise _bad("unsupported envelope version %r" % (msg.get("v"),))
    # Unexpected keys are counted rather than found with a set difference: "v" and the kind's
    # own key are present, so any key beyond those and the optional ones is one too many.
    # Requests and replies are most of the traffic: their usual shapes (an int id, a name
    # seen before, a dict) are tested inline, anything else goes to the helpers, which
    # accept or refuse exactly as before.
    if "verb" in msg:
        if len(msg) != 2 + ("id" in msg) + ("args" in msg):
            raise _bad("unexpected keys in a request")
        ident, verb, args = msg.get("id"), msg["verb"], msg.get("args")
        if type(ident) is not int or not 0 <= ident <= MAX_ID:
            ident = _id(msg)
        if type(verb) is not str or verb not in _GOOD_NAMES:
            verb = _name(verb, "verb")
        if type(args) is not dict:
            args = _args(msg, "args")
        return _tuple_new(Request, (ident, verb, args))
    if "notice" in msg:
        if len(msg) != 2 + ("args" in msg):
            raise _bad("unexpected keys in a notice")
        return Notice(_name(msg["notice"], "notice"), _args(msg, "args"))
    if "ok" in msg:
        ident = msg.get("id")
        if type(ident) is not int or not 0 <= ident <= MAX_ID:
            ident = _id(msg)
        if msg["ok"] is True:
            if len(msg) != 3 + ("result" in msg):      # "id" is there: _id passed
                raise _bad("unexpected keys in a reply")
            result = msg.get("result")
            if type(result) is not dict:
                result = _args(msg, "result")
            return _tuple_new(Reply, (ident, True, result, None))
        if msg["ok"] is False:
            if len(msg) != 3 + ("error" in msg):
                raise _bad("unexpected keys in an error reply")
            err = msg.get("error")
            if not isinstance(err, dict) or set(err) != {"code", "message"} \
                    or err["code"] not in CODES or not isinstance(err["message"], str):
                raise _bad("error must be {code, message} with a known code")
            return Reply(ident, False, {}, IpcError(err["code"], err["message"]))
        raise _bad("ok must be true or false")
    raise _bad("neither a request, a reply nor a notice")
