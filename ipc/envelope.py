"""The versioned envelope around every frame: request, reply, notice.

- request `{"v":1,"id":N,"verb":"domain.action","args":{...}}`
- reply   `{"v":1,"id":N,"ok":true,"result":{...}}` or
          `{"v":1,"id":N,"ok":false,"error":{"code":"...","message":"..."}}`
- notice  `{"v":1,"notice":"domain.event","args":{...}}` (no reply)

`parse` turns a decoded frame into one of the three records or raises BAD_ENVELOPE; it checks
shape only. Whether the verb exists, may be called, and has good arguments is ipc.verbs' job.
"""

import re
from dataclasses import dataclass
from typing import Union

from ipc.errors import BAD_ENVELOPE, CODES, IpcError

VERSION = 1
MAX_ID = 2 ** 53  # stays exact in every JSON implementation
VERB_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,47}")
MAX_ERROR_MESSAGE = 2048


@dataclass(frozen=True)
class Request:
    id: int
    verb: str
    args: dict


@dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    result: dict
    error: Union[IpcError, None]


@dataclass(frozen=True)
class Notice:
    notice: str
    args: dict


def request(id: int, verb: str, args: dict) -> dict:
    return {"v": VERSION, "id": id, "verb": verb, "args": args}


def reply(id: int, result: dict) -> dict:
    return {"v": VERSION, "id": id, "ok": True, "result": result}


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
    if not isinstance(value, str) or not VERB_RE.fullmatch(value):
        raise _bad("%s must look like domain.action" % what)
    return value


def _args(msg, key):
    value = msg.get(key, {})
    if not isinstance(value, dict):
        raise _bad("%s must be an object" % key)
    return value


def parse(msg: dict) -> Union[Request, Reply, Notice]:
    if msg.get("v") != VERSION:
        raise _bad("unsupported envelope version %r" % (msg.get("v"),))
    keys = set(msg)
    if "verb" in msg:
        if keys - {"v", "id", "verb", "args"}:
            raise _bad("unexpected keys in a request")
        return Request(_id(msg), _name(msg["verb"], "verb"), _args(msg, "args"))
    if "notice" in msg:
        if keys - {"v", "notice", "args"}:
            raise _bad("unexpected keys in a notice")
        return Notice(_name(msg["notice"], "notice"), _args(msg, "args"))
    if "ok" in msg:
        ident = _id(msg)
        if msg["ok"] is True:
            if keys - {"v", "id", "ok", "result"}:
                raise _bad("unexpected keys in a reply")
            return Reply(ident, True, _args(msg, "result"), None)
        if msg["ok"] is False:
            if keys - {"v", "id", "ok", "error"}:
                raise _bad("unexpected keys in an error reply")
            err = msg.get("error")
            if not isinstance(err, dict) or set(err) != {"code", "message"} \
                    or err["code"] not in CODES or not isinstance(err["message"], str):
                raise _bad("error must be {code, message} with a known code")
            return Reply(ident, False, {}, IpcError(err["code"], err["message"]))
        raise _bad("ok must be true or false")
    raise _bad("neither a request, a reply nor a notice")
