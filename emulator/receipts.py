"""What the emulator receives from the agent, validated against protocol.md §1.9–§1.13 and §2 and
kept in bounded per-kind lists. An invalid report is kept too, marked with its errors."""
import collections
import datetime
import hashlib
import io
import json
import re
import threading
import uuid
import xml.etree.ElementTree as ET
import zipfile

KEEP_PER_KIND = 200
KINDS = ("health", "role_properties", "telemetry", "health_service", "status", "log_upload", "rejected")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
HEALTH_DESCRIPTION_MAX = 3686
TELEMETRY_MAX_BYTES = 64512


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.seq = 0
        self.kinds = {k: collections.deque(maxlen=KEEP_PER_KIND) for k in KINDS}
        self.counts = {k: {"valid": 0, "invalid": 0} for k in KINDS}

    def add(self, kind, valid, errors, document=None, **extra):
        with self.lock:
            self.seq += 1
            rec = {"seq": self.seq, "time": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                   "valid": bool(valid), "errors": list(errors), "document": document}
            rec.update(extra)
            self.kinds[kind].append(rec)
            self.counts[kind]["valid" if valid else "invalid"] += 1
            return rec

    def dump(self, since=0):
        with self.lock:
            return {k: [r for r in v if r["seq"] > since] for k, v in self.kinds.items()}, \
                {k: dict(v) for k, v in self.counts.items()}

    def clear(self):
        with self.lock:
            for v in self.kinds.values():
                v.clear()
            for c in self.counts.values():
                c.update(valid=0, invalid=0)


def _parse_xml(body, errors):
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        errors.append("document type declarations are not accepted")
        return None
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        return ET.fromstring(body)
    except ET.ParseError as e:
        errors.append("not well-formed XML: %s" % e)
        return None


def _children(el):
    return [c.tag for c in el]


def _expect_children(el, names, where, errors):
    got = _children(el)
    if got != list(names):
        errors.append("%s: children %s, expected %s in that order" % (where, got, list(names)))
        return False
    return True


def _text(el, path):
    found = el.find(path)
    return None if found is None else (found.text or "")


def health(body, headers, expect):
    """§1.9. expect: dict of incarnations (set of str), container_id, role_instance_id."""
    errors, warnings = [], []
    ctype = headers.get("content-type", "")
    if ctype.replace(" ", "").lower() != "text/xml;charset=utf-8":
        errors.append("Content-Type %r, expected text/xml;charset=utf-8" % ctype)
    if not body.startswith(b'<?xml version="1.0" encoding="utf-8"?>'):
        errors.append("missing XML declaration with encoding utf-8")
    for ns in (b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"', b'xmlns:xsd="http://www.w3.org/2001/XMLSchema"'):
        if ns not in body:
            errors.append("missing namespace declaration %s" % ns.decode())
    root = _parse_xml(body, errors)
    doc = None
    if root is not None:
        if root.tag != "Health":
            errors.append("root element %r, expected Health" % root.tag)
        elif _expect_children(root, ["GoalStateIncarnation", "Container"], "Health", errors):
            cont = root.find("Container")
            _expect_children(cont, ["ContainerId", "RoleInstanceList"], "Container", errors)
            role = cont.find("RoleInstanceList/Role")
            rl = cont.find("RoleInstanceList")
            if rl is not None and _children(rl) != ["Role"]:
                errors.append("RoleInstanceList must hold exactly one Role")
            doc = {"incarnation": _text(root, "GoalStateIncarnation"), "container_id": _text(cont, "ContainerId")}
            if role is not None and _expect_children(role, ["InstanceId", "Health"], "Role", errors):
                h = role.find("Health")
                doc["instance_id"] = _text(role, "InstanceId")
                doc["state"] = _text(h, "State")
                if _children(h) not in (["State"], ["State", "Details"]):
                    errors.append("Role/Health: children %s, expected State[, Details]" % _children(h))
                if doc["state"] not in ("Ready", "NotReady"):
                    errors.append("State %r is not Ready or NotReady" % doc["state"])
                det = h.find("Details")
                if det is not None:
                    _expect_children(det, ["SubStatus", "Description"], "Details", errors)
                    doc["substatus"] = _text(det, "SubStatus")
                    doc["description"] = _text(det, "Description")
                    if doc["substatus"] not in ("Provisioning", "ProvisioningFailed"):
                        errors.append("SubStatus %r is not Provisioning or ProvisioningFailed" % doc["substatus"])
                    if len(doc["description"] or "") > HEALTH_DESCRIPTION_MAX:
                        errors.append("Description longer than %d characters" % HEALTH_DESCRIPTION_MAX)
            if doc.get("container_id") != expect["container_id"]:
                errors.append("ContainerId %r, expected %r" % (doc.get("container_id"), expect["container_id"]))
            if "instance_id" in doc and doc["instance_id"] != expect["role_instance_id"]:
                errors.append("InstanceId %r, expected %r" % (doc["instance_id"], expect["role_instance_id"]))
            if doc.get("incarnation") not in expect["incarnations"]:
                warnings.append("GoalStateIncarnation %r is not a recent incarnation" % doc.get("incarnation"))
    if len(body) > 4096:
        errors.append("body is %d bytes, over WireServer's 4096-byte limit" % len(body))
    return errors, warnings, doc


def role_properties(body, headers, expect):
    """§1.10."""
    errors = []
    root = _parse_xml(body, errors)
    doc = None
    if root is not None:
        if root.tag != "RoleProperties":
            errors.append("root element %r, expected RoleProperties" % root.tag)
        else:
            doc = {"container_id": _text(root, "Container/ContainerId"), "instances": []}
            if doc["container_id"] != expect["container_id"]:
                errors.append("ContainerId %r, expected %r" % (doc["container_id"], expect["container_id"]))
            for ri in root.findall("Container/RoleInstances/RoleInstance"):
                props = {p.get("name"): p.get("value") for p in ri.findall("Properties/Property")}
                doc["instances"].append({"id": _text(ri, "Id"), "properties": props})
                if _text(ri, "Id") != expect["role_instance_id"]:
                    errors.append("RoleInstance Id %r, expected %r" % (_text(ri, "Id"), expect["role_instance_id"]))
                if any(k is None or v is None for k, v in props.items()):
                    errors.append("Property without name or value")
            if not doc["instances"]:
                errors.append("no Container/RoleInstances/RoleInstance")
    return errors, [], doc


_PARAM_TYPES = {"mt:uint64", "mt:wstr", "mt:bool", "mt:float64"}


def telemetry(body, headers, expect):
    """§1.11."""
    errors = []
    if len(body) > TELEMETRY_MAX_BYTES:
        errors.append("body is %d bytes, over the %d-byte buffer" % (len(body), TELEMETRY_MAX_BYTES))
    root = _parse_xml(body, errors)
    doc = None
    if root is not None:
        if root.tag != "TelemetryData" or root.get("version") != "1.0":
            errors.append("root must be TelemetryData version=1.0")
        providers = root.findall("Provider")
        if not providers or len(providers) != len(root):
            errors.append("TelemetryData must hold Provider elements only")
        doc = {"providers": []}
        for prov in providers:
            pid = prov.get("id") or ""
            if not GUID_RE.match(pid):
                errors.append("Provider id %r is not a GUID" % pid)
            events = []
            for ev in prov:
                if ev.tag != "Event" or not (ev.get("id") or "").isdigit():
                    errors.append("Provider children must be Event with a numeric id")
                    continue
                params = {}
                try:
                    inner = ET.fromstring("<P>%s</P>" % (ev.text or ""))
                except ET.ParseError as e:
                    errors.append("event %s parameters not well-formed: %s" % (ev.get("id"), e))
                    continue
                for p in inner:
                    name, value, typ = p.get("Name"), p.get("Value"), p.get("T")
                    if p.tag != "Param" or name is None or value is None or typ not in _PARAM_TYPES:
                        errors.append("bad Param %r" % ET.tostring(p, encoding="unicode")[:200])
                        continue
                    if typ == "mt:uint64" and not re.match(r"^-?\d+$", value):
                        errors.append("Param %s: %r is not an integer" % (name, value))
                    if typ == "mt:bool" and value not in ("True", "False", "true", "false"):
                        errors.append("Param %s: %r is not a boolean" % (name, value))
                    params[name] = value
                events.append({"id": int(ev.get("id")), "params": params})
            doc["providers"].append({"id": pid, "events": events})
    return errors, [], doc


def _json_object(data):
    """(document, errors): a JSON object, or None with why not."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, ["not JSON: %s" % e]
    if not isinstance(doc, dict):
        return None, ["not a JSON object"]
    return doc, []


def health_service(body, headers, expect):
    """§1.13."""
    errors = []
    if not headers.get("content-type", "").lower().startswith("application/json"):
        errors.append("Content-Type %r, expected application/json" % headers.get("content-type"))
    doc, bad = _json_object(body)
    if bad:
        return errors + bad, [], None
    for key, want in (("Api", "reporttargethealth"), ("Version", "1.0"), ("Source", "WALinuxAgent")):
        if doc.get(key) != want:
            errors.append("%s %r, expected %r" % (key, doc.get(key), want))
    obs = doc.get("Observations")
    if not isinstance(obs, list):
        errors.append("Observations must be a list")
    else:
        if len(obs) > 10:
            errors.append("%d observations, at most 10" % len(obs))
        for o in obs:
            if not isinstance(o, dict):
                errors.append("observation is not an object")
                continue
            for key, limit in (("ObservationName", 64), ("Description", 128), ("Value", 128)):
                v = o.get(key)
                if key == "ObservationName" and not isinstance(v, str):
                    errors.append("ObservationName missing")
                elif v is not None and (not isinstance(v, str) or len(v) > limit):
                    errors.append("%s must be a string of at most %d characters" % (key, limit))
            if not isinstance(o.get("IsHealthy"), bool):
                errors.append("IsHealthy must be a boolean")
    return errors, [], doc


_HANDLER_STATUSES = {"Ready", "NotReady", "Unresponsive", "Installing"}
_EXT_STATUSES = {"transitioning", "warning", "error", "success"}


def _formatted(fm, where, errors):
    if not isinstance(fm, dict) or not isinstance(fm.get("lang"), str) or not isinstance(fm.get("message"), str):
        errors.append("%s.formattedMessage must have string lang and message" % where)


def status_blob(content):
    """§2. content: the blob bytes (page blobs arrive space- or NUL-padded)."""
    errors = []
    doc, bad = _json_object(content.rstrip(b"\x00 \r\n\t"))
    if bad:
        return bad, [], None
    if doc.get("version") != "1.1":
        errors.append("version %r, expected '1.1'" % doc.get("version"))
    if not TIMESTAMP_RE.match(str(doc.get("timestampUTC", ""))):
        errors.append("timestampUTC %r is not YYYY-MM-DDTHH:MM:SSZ" % doc.get("timestampUTC"))
    agg = doc.get("aggregateStatus")
    if not isinstance(agg, dict):
        errors.append("aggregateStatus missing")
        agg = {}
    ga = agg.get("guestAgentStatus")
    if not isinstance(ga, dict):
        errors.append("aggregateStatus.guestAgentStatus missing")
    else:
        if not isinstance(ga.get("version"), str) or not isinstance(ga.get("status"), str):
            errors.append("guestAgentStatus needs string version and status")
        _formatted(ga.get("formattedMessage"), "guestAgentStatus", errors)
    handlers = agg.get("handlerAggregateStatus", [])
    if not isinstance(handlers, list):
        errors.append("handlerAggregateStatus must be a list")
        handlers = []
    for i, h in enumerate(handlers):
        where = "handlerAggregateStatus[%d]" % i
        if not isinstance(h, dict):
            errors.append(where + " is not an object")
            continue
        for key in ("handlerName", "handlerVersion"):
            if not isinstance(h.get(key), str):
                errors.append("%s.%s must be a string" % (where, key))
        if h.get("status") not in _HANDLER_STATUSES:
            errors.append("%s.status %r not in %s" % (where, h.get("status"), sorted(_HANDLER_STATUSES)))
        if not isinstance(h.get("code"), int):
            errors.append(where + ".code must be an integer")
        if "formattedMessage" in h:
            _formatted(h["formattedMessage"], where, errors)
        rss = h.get("runtimeSettingsStatus")
        if rss is not None:
            if not isinstance(rss, dict) or not isinstance(rss.get("sequenceNumber"), int):
                errors.append(where + ".runtimeSettingsStatus.sequenceNumber must be an integer")
            else:
                st = (rss.get("settingsStatus") or {}).get("status") or {}
                if st.get("status") not in _EXT_STATUSES:
                    errors.append("%s settingsStatus.status.status %r not in %s" % (
                        where, st.get("status"), sorted(_EXT_STATUSES)))
    vma = agg.get("vmArtifactsAggregateStatus")
    if vma is not None:
        gsa = (vma or {}).get("goalStateAggregateStatus") if isinstance(vma, dict) else None
        if not isinstance(gsa, dict) or gsa.get("status") not in ("Success", "Failed") \
                or not isinstance(gsa.get("code"), int):
            errors.append("vmArtifactsAggregateStatus.goalStateAggregateStatus needs status Success|Failed and code")
    osinfo = doc.get("guestOSInfo")
    if not isinstance(osinfo, dict) or not all(isinstance(osinfo.get(k), str)
                                               for k in ("computerName", "osName", "osVersion", "version")):
        errors.append("guestOSInfo needs string computerName, osName, osVersion, version")
    feats = doc.get("supportedFeatures", [])
    if not isinstance(feats, list) or not all(isinstance(f, dict) and set(f) == {"Key", "Value"} for f in feats):
        errors.append("supportedFeatures must be a list of {Key, Value}")
    return errors, [], doc


def log_upload(body, headers, expect):
    """§1.12 PUT /vmAgentLog: the headers and a readable zip."""
    errors = []
    for h in ("x-ms-version", "x-ms-containerid", "x-ms-vmagentlog-deploymentid", "x-ms-client-name",
              "x-ms-client-version", "x-ms-client-correlationid"):
        if not headers.get(h):
            errors.append("missing header %s" % h)
    if headers.get("x-ms-client-name") and headers["x-ms-client-name"] != "WALinuxAgent":
        errors.append("x-ms-client-name %r, expected WALinuxAgent" % headers["x-ms-client-name"])
    try:
        uuid.UUID(headers.get("x-ms-client-correlationid", ""))
    except ValueError:
        errors.append("x-ms-client-correlationid is not a UUID")
    if headers.get("x-ms-vmagentlog-deploymentid") and \
            headers["x-ms-vmagentlog-deploymentid"] != expect["config_name"].split(".")[0]:
        errors.append("x-ms-vmagentlog-deploymentid %r, expected %r" % (
            headers["x-ms-vmagentlog-deploymentid"], expect["config_name"].split(".")[0]))
    # The digest lets a test prove the bytes received are the bundle it inspected on the VM.
    doc = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            names = zf.namelist()
            bad = zf.testzip()
            if bad:
                errors.append("zip member %s is corrupt" % bad)
            doc["entries"] = len(names)
            doc["names"] = names[:200]
    except zipfile.BadZipFile as e:
        errors.append("body is not a zip: %s" % e)
    return errors, [], doc
