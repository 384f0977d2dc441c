"""Report bodies byte for byte: health (§1.9), role properties (§1.10), telemetry (§1.11),
HealthService (§1.13), status blob PUTs (§1.12)."""

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st

from workers.platform import reports


def test_ready():
    body = reports.health_report("3", "cid", "iid", reports.READY)
    assert body == (b'<?xml version="1.0" encoding="utf-8"?><Health xmlns:xsi="http://www.w3.org/2001/'
                    b'XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
                    b"<GoalStateIncarnation>3</GoalStateIncarnation><Container><ContainerId>cid"
                    b"</ContainerId><RoleInstanceList><Role><InstanceId>iid</InstanceId><Health>"
                    b"<State>Ready</State></Health></Role></RoleInstanceList></Container></Health>")


def test_not_ready_with_details_order():
    root = ET.fromstring(reports.health_report("1", "c", "i", reports.NOT_READY,
                                               reports.PROVISIONING_FAILED, "boom <&>"))
    health = root.find("Container/RoleInstanceList/Role/Health")
    assert [e.tag for e in health] == ["State", "Details"]
    assert [e.tag for e in health.find("Details")] == ["SubStatus", "Description"]
    assert health.findtext("Details/Description") == "boom <&>"
    assert [e.tag for e in root] == ["GoalStateIncarnation", "Container"]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab&<>\u00e9", max_size=5000))
def test_description_trimmed_before_escaping(description):
    body = reports.health_report("1", "c", "i", reports.NOT_READY, reports.PROVISIONING, description)
    text = ET.fromstring(body).findtext("Container/RoleInstanceList/Role/Health/Details/Description")
    assert len(body) <= 4096
    trimmed = description[:3686]
    if len(reports.health_report("1", "c", "i", reports.NOT_READY, reports.PROVISIONING, "")) + \
            len(trimmed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode()) <= 4096:
        assert (text or "") == trimmed
    else:
        assert trimmed.startswith(text or "")


def test_description_is_trimmed_to_3686_chars_then_to_fit_4096_bytes():
    short = reports.health_report("1", "c", "i", reports.NOT_READY, reports.PROVISIONING, "d" * 3000)
    assert ET.fromstring(short).findtext(".//Description") == "d" * 3000
    body = reports.health_report("1", "c", "i", reports.NOT_READY, reports.PROVISIONING, "d" * 5000)
    overhead = len(reports.health_report("1", "c", "i", reports.NOT_READY, reports.PROVISIONING, ""))
    assert len(body) == 4096
    assert ET.fromstring(body).findtext(".//Description") == "d" * min(3686, 4096 - overhead)


def test_long_ids_still_fit_4096_bytes():
    body = reports.health_report("1", "c" * 36, "i" * 80, reports.NOT_READY,
                                 reports.PROVISIONING_FAILED, "x" * 5000)
    assert len(body) == 4096
    assert ET.fromstring(body).findtext(".//Description").startswith("xxx")


def test_bad_states():
    with pytest.raises(ValueError):
        reports.health_report("1", "c", "i", "Sleeping")
    with pytest.raises(ValueError):
        reports.health_report("1", "c", "i", reports.NOT_READY, "Whatever", "x")


def test_role_properties():
    body = reports.role_properties("cid", "iid", "ABC123")
    root = ET.fromstring(body)
    prop = root.find("Container/RoleInstances/RoleInstance/Properties/Property")
    assert prop.attrib == {"name": "CertificateThumbprint", "value": "ABC123"}
    assert root.findtext("Container/RoleInstances/RoleInstance/Id") == "iid"


def test_telemetry_shape_and_split():
    events = [reports.TelemetryEvent(reports.EXTENSION_EVENTS_PROVIDER, 1,
                                     (("Name", "x" * 1000), ("Duration", 5), ("OperationSuccess", True),
                                      ("Ratio", 0.5), ("Quote", 'a"]]>b')))
              for _ in range(100)]
    events.append(reports.TelemetryEvent(reports.EXTENSION_EVENTS_PROVIDER, 1, (("Big", "y" * 70000),)))
    events.append(reports.TelemetryEvent(reports.LOG_EVENTS_PROVIDER, 7, (("EventName", "e"),)))
    bodies = reports.telemetry_bodies(events)
    assert len(bodies) >= 3
    total = 0
    for body in bodies:
        assert len(body) <= 64512
        root = ET.fromstring(body)
        assert root.tag == "TelemetryData" and root.attrib == {"version": "1.0"}
        for event in root.find("Provider"):
            params = ET.fromstring("<x>%s</x>" % event.text)
            total += 1
            if root.find("Provider").attrib["id"] == reports.EXTENSION_EVENTS_PROVIDER:
                types = {p.attrib["Name"]: p.attrib["T"] for p in params}
                assert types == {"Name": "mt:wstr", "Duration": "mt:uint64",
                                 "OperationSuccess": "mt:bool", "Ratio": "mt:float64", "Quote": "mt:wstr"}
                assert params[4].attrib["Value"] == 'a"]]>b'
    assert total == 101  # the 70 kB event is dropped


def test_health_service():
    obs = [reports.Observation("n%d" % i + "x" * 100, i % 2 == 0, "d" * 200, "v" * 200) for i in range(12)]
    doc = json.loads(reports.health_service_report(obs))
    assert doc["Api"] == "reporttargethealth" and doc["Source"] == "WALinuxAgent"
    assert len(doc["Observations"]) == 10
    o = doc["Observations"][0]
    assert len(o["ObservationName"]) == 64 and len(o["Description"]) == 128 and len(o["Value"]) == 128


def test_block_blob():
    (req,) = reports.status_blob_requests("https://a/b.status?sig=x", "BlockBlob", b"{}", "2020-01-01T00:00:00Z")
    assert dict(req.headers) == {"Content-Length": "2", "x-ms-blob-type": "BlockBlob",
                                 "x-ms-date": "2020-01-01T00:00:00Z", "x-ms-version": "2014-02-14"}
    wrapped = json.loads(reports.host_plugin_status_body(req))
    assert list(wrapped) == ["content", "headers", "requestUri"]
    assert base64.b64decode(wrapped["content"]) == b"{}"
    assert wrapped["requestUri"] == "https://a/b.status?sig=x"


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9 * 1024 * 1024 // 7))
def test_page_blob(size):
    content = b"x" * size
    create, *pages = reports.status_blob_requests("https://a/b.status?sig=x", "PageBlob", content)
    h = dict(create.headers)
    assert create.body == b"" and h["Content-Length"] == "0" and h["x-ms-blob-type"] == "PageBlob"
    assert int(h["x-ms-blob-content-length"]) % 512 == 0 and int(h["x-ms-blob-content-length"]) >= size
    offset = 0
    for page in pages:
        ph = dict(page.headers)
        assert page.url == "https://a/b.status?sig=x&comp=page"
        assert len(page.body) % 512 == 0 and len(page.body) <= 4 * 1024 * 1024
        assert ph["x-ms-range"] == "bytes=%d-%d" % (offset, offset + len(page.body) - 1)
        assert ph["x-ms-page-write"] == "update"
        offset += len(page.body)
    joined = b"".join(p.body for p in pages)
    assert joined.rstrip(b" ") == content and offset == int(h["x-ms-blob-content-length"])


@settings(max_examples=300)
@given(st.text())
def test_xml_escaping_is_saxutils(text):
    # reports.py writes saxutils' escape and quoteattr out, to keep urllib.request out of
    # the workers; the bytes on the wire must not change for it.
    from xml.sax.saxutils import escape, quoteattr
    assert reports._xml_text(text) == escape(text)
    assert reports.quoteattr(text) == quoteattr(text)
