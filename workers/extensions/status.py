"""The VM status blob (protocol.md §2) and the reading of extension status files (§4.7).

`vm_status` builds the JSON document uploaded to StatusUploadBlob on every loop: the agent's
own status (Ready, its version, the supported features) even with no extension, one
handlerAggregateStatus entry per handler (per extension for multi-config), and the goal
state's aggregate once one was processed. `extension_status` validates what an extension
wrote, truncating as waagent truncates.
"""

import functools
import json
import socket
import time
from typing import List, Optional

from redaction import redact_sas
from workers.platform.identity import AGENT_VERSION

HANDLER_STATUSES = ("Ready", "NotReady", "Unresponsive", "Installing")
EXT_STATUSES = ("transitioning", "warning", "error", "success")
MAX_MESSAGE = 1024
MAX_COMMAND_MESSAGE = 3200      # our own error messages: a command's output, as waagent's
MAX_SUBSTATUS_FIELD = 10 * 1024
TRUNCATED = " ... [TRUNCATED]"
STATUS_CAP = 128 * 1024
NO_STATUS_FILE = ("This status is being reported by the Guest Agent since no status file was "
                  "reported by extension %s: [ExtensionStatusError] Status file %s does not "
                  "exist")

# Error codes (protocol.md §2, ExtensionErrorCodes).
CODE_UNKNOWN = -1
CODE_PROCESSING = 1000
CODE_MANIFEST_DOWNLOAD = 1001
CODE_MANIFEST_MISSING = 1002
CODE_MANIFEST_PARSE = 1003
CODE_PACKAGE_DOWNLOAD = 1004
CODE_PACKAGE_EXTRACTION = 1005
CODE_INSTALL = 1007
CODE_UPDATE = 1008
CODE_ENABLE = 1009
CODE_DISABLE = 1010
CODE_TIMEOUT = 1011
CODE_STATUS_INVALID = 1012
CODE_UNSUPPORTED_FEATURES = 2001


def timestamp(now: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time()))


def formatted(message: str) -> dict:
    return {"lang": "en-US", "message": redact_sas(message)}


# Plain classes (job.py updates them), not dataclasses: see spawner/zygote.py PRELOAD.
class ExtensionReport:
    """One extension's runtimeSettingsStatus (what its status file said, or ours)."""
    __slots__ = ("sequence_number", "status", "extension_name", "timestamp")

    def __init__(self, sequence_number: int, status: dict,
                 extension_name: Optional[str] = None, timestamp: str = ""):
        self.sequence_number = sequence_number
        self.status = status                    # the "status" object of §4.7
        self.extension_name = extension_name
        self.timestamp = timestamp


class HandlerReport:
    __slots__ = ("name", "version", "status", "code", "message", "extensions")

    def __init__(self, name: str, version: str, status: str = "NotReady", code: int = 0,
                 message: Optional[str] = None,
                 extensions: Optional[List[ExtensionReport]] = None):
        self.name = name
        self.version = version
        self.status = status        # Ready | NotReady | Unresponsive | Installing
        self.code = code
        self.message = message
        self.extensions: List[ExtensionReport] = [] if extensions is None else extensions

    def entries(self) -> List[dict]:
        base = {"handlerName": self.name, "handlerVersion": self.version, "status": self.status,
                "code": self.code, "useExactVersion": True}
        if self.message:
            base["formattedMessage"] = formatted(self.message[:MAX_COMMAND_MESSAGE])
        if not self.extensions:
            return [base]
        out = []
        for ext in self.extensions:
            entry = dict(base)
            rss = {"settingsStatus": {"status": ext.status, "version": 1.0,
                                      "timestampUTC": ext.timestamp or timestamp()},
                   "sequenceNumber": ext.sequence_number}
            if ext.extension_name:
                rss["extensionName"] = ext.extension_name
            entry["runtimeSettingsStatus"] = rss
            out.append(entry)
        return out


@functools.lru_cache(maxsize=1)
def _os_release() -> dict:
    """/etc/os-release's fields, read once (as waagent reads its distribution once): the blob
    is built every poll."""
    fields = {}
    try:
        with open("/etc/os-release") as f:
            for line in f.read(16384).splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v.strip().strip('"')
    except OSError:
        pass
    return fields


def _os_info() -> dict:
    fields = _os_release()
    return {"computerName": socket.gethostname(), "osName": fields.get("ID", "linux"),
            "osVersion": fields.get("VERSION_ID", ""), "version": AGENT_VERSION}


def vm_status(handlers: List[HandlerReport], goal_state: Optional[dict],
              fast_track: bool = False, now: Optional[float] = None) -> bytes:
    """goal_state: {"status": Success|Failed, "code", "message", "in_svd_seq_no"} or None."""
    agg = {"guestAgentStatus": {"version": AGENT_VERSION, "status": "Ready",
                                "formattedMessage": formatted("Guest Agent is running")},
           "handlerAggregateStatus": [e for h in handlers for e in h.entries()]}
    if goal_state is not None:
        agg["vmArtifactsAggregateStatus"] = {"goalStateAggregateStatus": {
            "formattedMessage": formatted(goal_state["message"]), "timestampUTC": timestamp(now),
            "inSvdSeqNo": goal_state.get("in_svd_seq_no") or "",
            "status": goal_state["status"], "code": goal_state["code"]}}
    features = [{"Key": "MultipleExtensionsPerHandler", "Value": "1.0"}]
    if fast_track:
        features.append({"Key": "FastTrack", "Value": "1.0"})
    doc = {"version": "1.1", "timestampUTC": timestamp(now), "aggregateStatus": agg,
           "guestOSInfo": _os_info(), "supportedFeatures": features}
    return json.dumps(doc, separators=(",", ":")).encode()


HEARTBEAT_STALE = 600.0   # seconds (§4.8): older than this, the handler is Unresponsive


def heartbeat_status(text: Optional[str], age: Optional[float]):
    """(handler status, code, message) from heartbeat.log of a reportHeartbeat handler."""
    if text is None:
        return "NotReady", -1, "heartbeat.log is missing (the handler reports heartbeats)"
    if age is not None and age > HEARTBEAT_STALE:
        return "Unresponsive", -1, "The extension has not reported a heartbeat for %.0f s" % age
    try:
        hb = json.loads(text)[0]["heartbeat"]
        state = hb["status"]
        if state not in HANDLER_STATUSES:
            raise ValueError(state)
        fm = hb.get("formattedMessage") or {}
        return state, int(hb.get("code", 0)), _cut(str(fm.get("message", "")), MAX_MESSAGE)
    except (ValueError, KeyError, IndexError, TypeError):
        return "NotReady", -1, "heartbeat.log is malformed"


def _cut(text, limit: int) -> str:
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def error_status(name: str, operation: str, code: int, message: str) -> dict:
    return {"name": name, "operation": operation, "status": "error", "code": code,
            "formattedMessage": formatted(message[:MAX_COMMAND_MESSAGE])}


def extension_status(name: str, seq: int, text: Optional[str], size: int,
                     read_error: Optional[str], operation: str = "Enable") -> dict:
    """The "status" object for the blob from a status file's text (§4.7 rules)."""
    if read_error:
        return error_status(name, operation, CODE_STATUS_INVALID,
                            "status file %d.status is unusable (%d bytes): %s"
                            % (seq, size, read_error))
    if text is None:
        return {"name": name, "operation": operation, "status": "transitioning", "code": 0,
                "formattedMessage": formatted(NO_STATUS_FILE % (name, "%d.status" % seq))}
    try:
        doc = json.loads(text)
        if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
            raise ValueError("not a JSON array of objects")
        st = doc[0].get("status")
        if not isinstance(st, dict):
            raise ValueError("no status object")
        value = st.get("status")
        if not isinstance(value, str):
            raise ValueError("status.status is missing")
    except ValueError as e:
        return error_status(name, operation, CODE_STATUS_INVALID,
                            "malformed status file %d.status: %s" % (seq, str(e)[:200]))
    out = {"name": _cut(st.get("name") or name, MAX_MESSAGE),
           "operation": _cut(st.get("operation") or operation, MAX_MESSAGE),
           "status": value if value in EXT_STATUSES else "error",
           "code": st.get("code") if isinstance(st.get("code"), int) else
           (0 if value in EXT_STATUSES else -1)}
    if st.get("configurationAppliedTime"):
        out["configurationAppliedTime"] = str(st["configurationAppliedTime"])[:64]
    fm = st.get("formattedMessage")
    if isinstance(fm, dict) and "message" in fm:
        out["formattedMessage"] = {"lang": str(fm.get("lang", "en-US"))[:32],
                                   "message": redact_sas(_cut(fm["message"], MAX_MESSAGE))}
    elif value not in EXT_STATUSES:
        out["formattedMessage"] = formatted("status %r is not one of %s"
                                            % (value[:64], ", ".join(EXT_STATUSES)))
    subs = st.get("substatus")
    if isinstance(subs, list):
        kept, total = [], 0
        for s in subs:
            if not isinstance(s, dict):
                continue
            sub = {"name": _cut(s.get("name", ""), MAX_SUBSTATUS_FIELD),
                   "status": s.get("status") if s.get("status") in EXT_STATUSES else "error",
                   "code": s.get("code") if isinstance(s.get("code"), int) else 0}
            sfm = s.get("formattedMessage")
            if isinstance(sfm, dict):
                sub["formattedMessage"] = {"lang": str(sfm.get("lang", "en-US"))[:32],
                                           "message": redact_sas(_cut(sfm.get("message", ""),
                                                                      MAX_SUBSTATUS_FIELD))}
            total += len(json.dumps(sub))
            if total > STATUS_CAP:
                break
            kept.append(sub)
        if kept:
            out["substatus"] = kept
    return out
