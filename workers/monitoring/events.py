"""Telemetry event files, parsed (protocol.md §1.11 and §4.13): the agent's `*.tld` files and
the extensions' `<digits>.json` files, as the broker hands them over (telemetry.collect).

Everything here is input from elsewhere (another agent's writer, an extension running as root):
each file is checked field by field, and a file or event that does not fit is dropped with the
reason, never raised. Every string value is run through the one redaction filter (a SAS
signature in a URL becomes `sig=***REDACTED***`) before it can leave the VM.

- `agent_event(data)`: one `{"eventId", "providerId", "parameters": [{"name","value"}...]}`
  file -> a TelemetryEvent (UTF-8, with or without BOM, or UTF-16 with its BOM).
- `extension_events(handler, data)`: an ETP file -> log events (provider FFF0196F…, id 7):
  EventName `<Handler>-<Version>`, CapabilityUsed the level, Context1 the message (cut to 3072
  chars), Context2 the timestamp, Context3 the operation id; an event over 6144 chars dropped.
"""

import json
import re
from typing import List, Tuple

from redaction import redact
from workers.platform.reports import LOG_EVENTS_PROVIDER, TelemetryEvent

GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
MAX_PARAMS = 64
MAX_VALUE_CHARS = 64 * 1024

ETP_KEYS = ("version", "timestamp", "taskname", "eventlevel", "message", "eventpid", "eventtid",
            "operationid")
ETP_MAX_MESSAGE = 3072
ETP_MAX_EVENT = 6144
ETP_MAX_EVENTS = 360          # per extension per round (the caller counts across files)
LOG_EVENT_ID = 7


class Malformed(ValueError):
    """Why a file or an event is dropped."""


def _text(data: bytes) -> str:
    try:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Malformed("not UTF-8 or UTF-16 text: %s" % e) from None


def _json(data: bytes):
    text = _text(data)
    try:
        return json.loads(text)
    except RecursionError:
        raise Malformed("JSON nested too deep") from None
    except ValueError as e:
        raise Malformed("not JSON: %s" % str(e)[:200]) from None


def _value(v):
    if isinstance(v, bool) or isinstance(v, float):
        return v
    if isinstance(v, int):
        if not 0 <= v < 2 ** 64:
            raise Malformed("integer %d outside uint64" % v)
        return v
    if isinstance(v, str):
        if len(v) > MAX_VALUE_CHARS:
            raise Malformed("a value of %d chars" % len(v))
        return redact(v)
    raise Malformed("a value of type %s" % type(v).__name__)


def agent_event(data: bytes) -> TelemetryEvent:
    doc = _json(data)
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    event_id, provider, params = doc.get("eventId"), doc.get("providerId"), doc.get("parameters")
    if not isinstance(event_id, int) or isinstance(event_id, bool) or not 0 <= event_id < 2 ** 31:
        raise Malformed("eventId %r is not a number" % (event_id,))
    if not isinstance(provider, str) or not GUID.fullmatch(provider):
        raise Malformed("providerId %r is not a GUID" % (str(provider)[:80],))
    if not isinstance(params, list) or not 0 < len(params) <= MAX_PARAMS:
        raise Malformed("parameters is not a list of 1..%d" % MAX_PARAMS)
    out = []
    for p in params:
        if not isinstance(p, dict) or set(p) != {"name", "value"}:
            raise Malformed("a parameter is not {name, value}")
        name = p["name"]
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            raise Malformed("parameter name %r" % (str(name)[:80],))
        out.append((name, _value(p["value"])))
    return TelemetryEvent(provider, event_id, tuple(out))


def extension_events(handler: str, data: bytes) -> Tuple[List[TelemetryEvent], List[str]]:
    """(the events, why each dropped event was dropped); raises Malformed for the whole file."""
    doc = _json(data)
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise Malformed("not a JSON list of events")
    events, dropped = [], []
    for n, item in enumerate(doc):
        try:
            events.append(_extension_event(handler, item))
        except Malformed as e:
            dropped.append("event %d: %s" % (n, e))
    return events, dropped


def _extension_event(handler: str, item) -> TelemetryEvent:
    if not isinstance(item, dict):
        raise Malformed("not a JSON object")
    fields = {}
    for key, value in item.items():
        if isinstance(key, str) and key.lower() in ETP_KEYS:
            fields[key.lower()] = value
    missing = [k for k in ETP_KEYS if k not in fields]
    if missing:
        raise Malformed("missing %s" % ", ".join(missing))
    for key, value in fields.items():
        if isinstance(value, int) and not isinstance(value, bool):
            fields[key] = str(value)
        elif not isinstance(value, str):
            raise Malformed("%s is %s, not a string" % (key, type(value).__name__))
    if not fields["message"]:
        raise Malformed("an empty message")
    fields["message"] = fields["message"][:ETP_MAX_MESSAGE]
    if len(json.dumps(fields)) > ETP_MAX_EVENT:
        raise Malformed("over %d chars" % ETP_MAX_EVENT)
    return TelemetryEvent(LOG_EVENTS_PROVIDER, LOG_EVENT_ID, (
        ("EventName", redact("%s-%s" % (handler, fields["version"]))),
        ("CapabilityUsed", redact(fields["eventlevel"])),
        ("Context1", redact(fields["message"])),
        ("Context2", redact(fields["timestamp"])),
        ("Context3", redact(fields["operationid"])),
        ("EventPid", redact(fields["eventpid"])),
        ("EventTid", redact(fields["eventtid"])),
        ("TaskName", redact(fields["taskname"])),
    ))
