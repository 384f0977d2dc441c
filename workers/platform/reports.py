"""What the agent tells the platform, as bytes on the wire: health (§1.9), role properties
(§1.10), telemetry (§1.11), HealthService (§1.13) and the status blob PUTs (§1.12, §2).

Pure builders (no I/O): the clients in wireserver.py / hostplugin.py send what these return,
so the exact bytes are unit-tested here and checked by the emulator's validators.
"""

import base64
import datetime
import json
from typing import List, NamedTuple, Optional, Sequence, Tuple

READY = "Ready"
NOT_READY = "NotReady"
PROVISIONING = "Provisioning"
PROVISIONING_FAILED = "ProvisioningFailed"
HEALTH_STATES = (READY, NOT_READY)
SUBSTATUSES = (PROVISIONING, PROVISIONING_FAILED)
# The WireServer refuses a Health body over 4096 bytes; waagent trims the description to this
# many characters before escaping.
MAX_DESCRIPTION_CHARS = 3686
MAX_HEALTH_BODY_BYTES = 4096

TELEMETRY_MAX_BYTES = 2 ** 16 - 2 ** 10   # 64512: one request's events
HEALTH_SERVICE_MAX_OBSERVATIONS = 10
PAGE_SIZE = 512
MAX_PAGE_WRITE = 4 * 1024 * 1024


# xml.sax.saxutils' escape and quoteattr, written out: importing saxutils imports
# urllib.request (and tempfile, shutil, hashlib with it), ~0.9 MiB resident in each worker
# for these few lines (issue 17). tests/unit/test_platform_reports.py holds them to saxutils.
def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(value: str) -> str:
    value = _xml_text(value).replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    if '"' not in value:
        return '"%s"' % value
    if "'" not in value:
        return "'%s'" % value
    return '"%s"' % value.replace('"', "&quot;")


def _health_body(incarnation, container_id, role_instance_id, state, substatus, text) -> bytes:
    details = ""
    if substatus is not None:
        details = ("<Details><SubStatus>%s</SubStatus><Description>%s</Description></Details>"
                   % (_xml_text(substatus), _xml_text(text)))
    body = ('<?xml version="1.0" encoding="utf-8"?>'
            '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
            "<GoalStateIncarnation>%s</GoalStateIncarnation>"
            "<Container><ContainerId>%s</ContainerId><RoleInstanceList><Role>"
            "<InstanceId>%s</InstanceId>"
            "<Health><State>%s</State>%s</Health>"
            "</Role></RoleInstanceList></Container></Health>"
            % (_xml_text(incarnation), _xml_text(container_id), _xml_text(role_instance_id),
               state, details))
    return body.encode("utf-8")


def health_report(incarnation: str, container_id: str, role_instance_id: str, state: str,
                  substatus: Optional[str] = None, description: Optional[str] = None) -> bytes:
    """The POST ?comp=health body; Details only when a substatus is given.

    The description is trimmed to 3686 characters before escaping (§1.9). That trim exists to
    keep the body under the WireServer's 4096-byte limit, which long ids, escaping or non-ASCII
    text can still pass; then the description is cut further, on a character boundary, until
    the body fits.
    """
    if state not in HEALTH_STATES:
        raise ValueError("health state %r" % state)
    if substatus is not None and substatus not in SUBSTATUSES:
        raise ValueError("health substatus %r" % substatus)
    text = (description or "")[:MAX_DESCRIPTION_CHARS]
    args = (incarnation, container_id, role_instance_id, state, substatus)
    body = _health_body(*args, text)
    if substatus is None or len(body) <= MAX_HEALTH_BODY_BYTES:
        return body
    budget = MAX_HEALTH_BODY_BYTES - len(_health_body(*args, ""))
    used, keep = 0, 0
    for ch in text:
        size = len(_xml_text(ch).encode("utf-8"))
        if used + size > budget:
            break
        used += size
        keep += 1
    return _health_body(*args, text[:keep])


def role_properties(container_id: str, role_instance_id: str, thumbprint: str) -> bytes:
    """The POST ?comp=roleProperties body publishing the SSH host key thumbprint."""
    body = ('<?xml version="1.0" encoding="utf-8"?><RoleProperties><Container>'
            "<ContainerId>%s</ContainerId><RoleInstances><RoleInstance><Id>%s</Id>"
            "<Properties><Property name=\"CertificateThumbprint\" value=%s />"
            "</Properties></RoleInstance></RoleInstances></Container></RoleProperties>"
            % (_xml_text(container_id), _xml_text(role_instance_id), quoteattr(thumbprint)))
    return body.encode("utf-8")


# --- Telemetry (§1.11) -----------------------------------------------------------------------

EXTENSION_EVENTS_PROVIDER = "69B669B9-4AF8-4C50-BDC4-6006FA76E975"
LOG_EVENTS_PROVIDER = "FFF0196F-EE4C-4EAF-9AA5-776F622DEB4F"


class TelemetryEvent(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    provider_id: str
    event_id: int
    parameters: Tuple[Tuple[str, object], ...] = ()


def _param_type(value) -> Tuple[str, str]:
    if isinstance(value, bool):
        return "mt:bool", "True" if value else "False"
    if isinstance(value, int):
        return "mt:uint64", str(value)
    if isinstance(value, float):
        return "mt:float64", repr(value)
    return "mt:wstr", str(value)


def telemetry_event_xml(event: TelemetryEvent) -> str:
    params = []
    for name, value in event.parameters:
        kind, text = _param_type(value)
        # quoteattr escapes ">", so no value can end the CDATA section early.
        params.append("<Param Name=%s Value=%s T=%s />" % (
            quoteattr(str(name)), quoteattr(text), quoteattr(kind)))
    return '<Event id="%d"><![CDATA[%s]]></Event>' % (event.event_id, "".join(params))


def telemetry_bodies(events: Sequence[TelemetryEvent]) -> List[bytes]:
    """Request bodies: one provider per body, each at most 64512 bytes; an event larger than
    that alone is dropped (as waagent does)."""
    bodies: List[bytes] = []
    by_provider = {}
    for event in events:
        by_provider.setdefault(event.provider_id, []).append(event)
    for provider, provider_events in by_provider.items():
        head = '<?xml version="1.0"?><TelemetryData version="1.0"><Provider id=%s>' \
            % quoteattr(provider)
        tail = "</Provider></TelemetryData>"
        overhead = len(head.encode()) + len(tail.encode())
        current: List[bytes] = []
        size = overhead
        for event in provider_events:
            data = telemetry_event_xml(event).encode("utf-8")
            if len(data) + overhead > TELEMETRY_MAX_BYTES:
                continue
            if size + len(data) > TELEMETRY_MAX_BYTES:
                bodies.append(head.encode() + b"".join(current) + tail.encode())
                current, size = [], overhead
            current.append(data)
            size += len(data)
        if current:
            bodies.append(head.encode() + b"".join(current) + tail.encode())
    return bodies


# --- HealthService (§1.13) -------------------------------------------------------------------

class Observation(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    name: str
    is_healthy: bool
    description: str = ""
    value: str = ""


def health_service_report(observations: Sequence[Observation]) -> bytes:
    """The HealthService JSON: at most 10 observations, fields cut to 64/128/128 chars."""
    kept = list(observations)[-HEALTH_SERVICE_MAX_OBSERVATIONS:]
    doc = {"Api": "reporttargethealth", "Version": "1.0", "Source": "WALinuxAgent",
           "Observations": [{"ObservationName": o.name[:64], "IsHealthy": bool(o.is_healthy),
                             "Description": o.description[:128], "Value": o.value[:128]}
                            for o in kept]}
    return json.dumps(doc).encode("utf-8")


# --- The status blob (§1.12, §2) -------------------------------------------------------------

def blob_timestamp(now: Optional[datetime.datetime] = None) -> str:
    """x-ms-date as waagent writes it: YYYY-MM-DDTHH:MM:SSZ (not RFC 1123)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class BlobRequest(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """One PUT of a status blob upload: the URL, its headers, its body."""
    url: str
    headers: Tuple[Tuple[str, str], ...]
    body: bytes

    def __repr__(self):  # not the body: a blob's worth of bytes
        return "BlobRequest(url=%r, headers=%r)" % (self.url, self.headers)


def _with_query(url: str, extra: str) -> str:
    return url + ("&" if "?" in url else "?") + extra


def status_blob_requests(sas_url: str, blob_type: str, content: bytes,
                         date: Optional[str] = None) -> List[BlobRequest]:
    """The PUTs that write `content` to the status blob: one for a block blob; for a page blob
    a create (size rounded up to 512) then ?comp=page writes of at most 4 MiB, space-padded."""
    date = date or blob_timestamp()
    version = ("x-ms-version", "2014-02-14")
    if blob_type == "PageBlob":
        padded_size = (len(content) + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        requests = [BlobRequest(sas_url, (
            ("Content-Length", "0"), ("x-ms-blob-content-length", str(padded_size)),
            ("x-ms-blob-type", "PageBlob"), ("x-ms-date", date), version), b"")]
        start = 0
        while start < len(content):
            piece = content[start:start + MAX_PAGE_WRITE]
            piece += b" " * ((PAGE_SIZE - len(piece) % PAGE_SIZE) % PAGE_SIZE)
            end = start + len(piece) - 1
            requests.append(BlobRequest(_with_query(sas_url, "comp=page"), (
                ("Content-Length", str(len(piece))), ("x-ms-range", "bytes=%d-%d" % (start, end)),
                ("x-ms-page-write", "update"), ("x-ms-date", date), version), piece))
            start += MAX_PAGE_WRITE
        return requests
    return [BlobRequest(sas_url, (
        ("Content-Length", str(len(content))), ("x-ms-blob-type", "BlockBlob"),
        ("x-ms-date", date), version), content)]


def host_plugin_status_body(request: BlobRequest) -> bytes:
    """The HostGAPlugin PUT /status wrapper of one blob request (keys sorted)."""
    doc = {"content": base64.b64encode(request.body).decode("ascii"),
           "headers": [{"headerName": k, "headerValue": v} for k, v in request.headers],
           "requestUri": request.url}
    return json.dumps(doc, sort_keys=True).encode("utf-8")
