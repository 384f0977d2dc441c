"""What the agent sends is recorded and validated (protocol.md §1.9–§1.13, §2)."""
import base64
import io
import json
import math
import uuid
import zipfile

import requests

from tests.contract.emulator_harness import WS_HEADERS

XML_POST = dict(WS_HEADERS, **{"Content-Type": "text/xml;charset=utf-8"})


def vm(emu):
    return requests.get(emu.ws + "/_emulator/state", timeout=10).json()["vm"]


def health_body(container, instance, state="NotReady", substatus="Provisioning", description="Starting"):
    details = ("<Details><SubStatus>%s</SubStatus><Description>%s</Description></Details>" % (substatus, description)
               if substatus else "")
    return ('<?xml version="1.0" encoding="utf-8"?><Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><GoalStateIncarnation>1</GoalStateIncarnation><Container>'
            '<ContainerId>%s</ContainerId><RoleInstanceList><Role><InstanceId>%s</InstanceId><Health><State>%s</State>'
            '%s</Health></Role></RoleInstanceList></Container></Health>' % (container, instance, state, details))


def status_doc(hostname="guestagent-demo"):
    return {
        "version": "1.1", "timestampUTC": "2024-05-01T10:00:00Z",
        "aggregateStatus": {
            "guestAgentStatus": {"version": "2.15.0.1", "status": "Ready",
                                 "formattedMessage": {"lang": "en-US", "message": "Guest Agent is running"}},
            "handlerAggregateStatus": [{
                "handlerName": "Contoso.Demo.HelloWorld", "handlerVersion": "1.0.0", "status": "Ready", "code": 0,
                "useExactVersion": True, "formattedMessage": {"lang": "en-US", "message": "Plugin enabled"},
                "runtimeSettingsStatus": {"sequenceNumber": 0, "settingsStatus": {
                    "timestampUTC": "2024-05-01T10:00:00Z", "version": 1.0,
                    "status": {"name": "HelloWorld", "operation": "Enable", "status": "success", "code": 0,
                               "formattedMessage": {"lang": "en-US", "message": "hi"}}}}}],
            "vmArtifactsAggregateStatus": {"goalStateAggregateStatus": {
                "formattedMessage": {"lang": "en-US", "message": "GoalState executed successfully"},
                "timestampUTC": "2024-05-01T10:00:00Z", "inSvdSeqNo": "1", "status": "Success", "code": 0}}},
        "guestOSInfo": {"computerName": hostname, "osName": "debian", "osVersion": "12", "version": "2.15.0.1"},
        "supportedFeatures": [{"Key": "MultipleExtensionsPerHandler", "Value": "1.0"}],
    }


def received(emu, kind):
    return requests.get(emu.ws + "/_emulator/state", timeout=10).json()["received"][kind]


def test_health_reports(emulator_factory):
    from tests.contract.emulator_harness import DEFAULT_SCENARIO
    emu = emulator_factory("--scenario", DEFAULT_SCENARIO)
    v = vm(emu)
    url = emu.ws + "/machine?comp=health"
    assert requests.post(url, data=health_body(v["container_id"], v["role_instance_id"]), headers=XML_POST,
                         timeout=10).status_code == 200
    assert requests.post(url, data=health_body(v["container_id"], v["role_instance_id"], "Ready", None),
                         headers=XML_POST, timeout=10).status_code == 200
    # wrong order, unknown state, wrong container: accepted by HTTP, recorded invalid
    bad = health_body(v["container_id"], v["role_instance_id"]).replace(
        "<GoalStateIncarnation>1</GoalStateIncarnation><Container>", "<Container>").replace(
        "</Container></Health>", "</Container><GoalStateIncarnation>1</GoalStateIncarnation></Health>")
    requests.post(url, data=bad, headers=XML_POST, timeout=10)
    requests.post(url, data=health_body("nope", v["role_instance_id"], "Sleepy", None), headers=XML_POST, timeout=10)
    requests.post(url, data=health_body(v["container_id"], v["role_instance_id"], "NotReady", "ProvisioningFailed",
                                        "x" * 3700), headers=XML_POST, timeout=10)
    recs = received(emu, "health")
    assert [r["valid"] for r in recs] == [True, True, False, False, False]
    assert recs[0]["document"]["substatus"] == "Provisioning" and recs[1]["document"]["state"] == "Ready"
    assert any("order" in e for e in recs[2]["errors"])
    assert any("Sleepy" in e for e in recs[3]["errors"]) and any("ContainerId" in e for e in recs[3]["errors"])
    assert any("3686" in e for e in recs[4]["errors"])
    # without the WireServer headers it is refused outright
    assert requests.post(url, data=health_body(v["container_id"], v["role_instance_id"]), timeout=10).status_code == 400


def test_role_properties_telemetry_and_health_service(default_emulator):
    emu = default_emulator
    v = vm(emu)
    rp = ('<?xml version="1.0" encoding="utf-8"?><RoleProperties><Container><ContainerId>%s</ContainerId>'
          '<RoleInstances><RoleInstance><Id>%s</Id><Properties><Property name="CertificateThumbprint" value="AB" />'
          '</Properties></RoleInstance></RoleInstances></Container></RoleProperties>' % (
              v["container_id"], v["role_instance_id"]))
    assert requests.post(emu.ws + "/machine?comp=roleProperties", data=rp, headers=XML_POST,
                         timeout=10).status_code == 202
    assert received(emu, "role_properties")[-1]["valid"]

    ev = ('<Event id="1"><![CDATA[<Param Name="Name" Value="WALinuxAgent" T="mt:wstr" />'
          '<Param Name="OperationSuccess" Value="True" T="mt:bool" /><Param Name="Duration" Value="12" T="mt:uint64" />'
          ']]></Event>')
    body = ('<?xml version="1.0"?><TelemetryData version="1.0"><Provider id="69B669B9-4AF8-4C50-BDC4-6006FA76E975">'
            + ev + '</Provider></TelemetryData>')
    assert requests.post(emu.ws + "/machine?comp=telemetrydata", data=body.encode(), headers=XML_POST,
                         timeout=10).status_code == 200
    rec = received(emu, "telemetry")[-1]
    assert rec["valid"] and rec["document"]["providers"][0]["events"][0]["params"]["Duration"] == "12"
    too_big = body.replace(ev, ev * 700)
    requests.post(emu.ws + "/machine?comp=telemetrydata", data=too_big.encode(), headers=XML_POST, timeout=10)
    assert not received(emu, "telemetry")[-1]["valid"]

    hs = {"Api": "reporttargethealth", "Version": "1.0", "Source": "WALinuxAgent",
          "Observations": [{"ObservationName": "GuestAgentPluginHeartbeat", "IsHealthy": True,
                            "Description": "", "Value": ""}]}
    assert requests.post(emu.ws + "/HealthService", json=hs, timeout=10).status_code == 200
    hs["Observations"][0]["IsHealthy"] = "yes"
    requests.post(emu.ws + "/HealthService", json=hs, timeout=10)
    assert [r["valid"] for r in received(emu, "health_service")][-2:] == [True, False]


def test_status_blob_direct_block_blob(default_emulator):
    emu = default_emulator
    url = vm(emu)["status_blob_url"]
    body = json.dumps(status_doc()).encode()
    headers = {"x-ms-blob-type": "BlockBlob", "x-ms-date": "2024-05-01T10:00:00Z", "x-ms-version": "2014-02-14"}
    assert requests.put(url, data=body, headers=headers, timeout=10).status_code == 201
    st = requests.get(emu.ws + "/_emulator/state", timeout=10).json()
    assert st["latest_status"]["channel"] == "direct" and st["latest_status"]["blob_type"] == "BlockBlob"
    assert st["received"]["status"][-1]["valid"]
    assert requests.get(url, timeout=10).content == body
    # a wrong signature is refused as storage refuses it
    assert requests.put(url.replace("sig=", "sig=x"), data=body, headers=headers, timeout=10).status_code == 403
    # a status that breaks §2 is recorded invalid
    broken = status_doc()
    broken["aggregateStatus"]["handlerAggregateStatus"][0]["status"] = "Happy"
    requests.put(url, data=json.dumps(broken).encode(), headers=headers, timeout=10)
    assert not received(emu, "status")[-1]["valid"]


def hgap_put_status(emu, v, request_uri, blob_headers, content):
    body = {"content": base64.b64encode(content).decode(),
            "headers": [{"headerName": k, "headerValue": val} for k, val in blob_headers.items()],
            "requestUri": request_uri}
    return requests.put(emu.hgap + "/status", data=json.dumps(body, sort_keys=True), timeout=10, headers={
        "x-ms-version": "2015-09-01", "x-ms-containerid": v["container_id"],
        "x-ms-host-config-name": v["config_name"], "Content-type": "application/json"})


def test_status_blob_page_blob_through_hostgaplugin(default_emulator):
    emu = default_emulator
    v = vm(emu)
    url = v["status_blob_url"]
    content = json.dumps(status_doc()).encode()
    size = int(math.ceil(len(content) / 512.0) * 512)
    r = hgap_put_status(emu, v, url, {"Content-Length": "0", "x-ms-blob-content-length": str(size),
                                      "x-ms-blob-type": "PageBlob", "x-ms-date": "2024-05-01T10:00:00Z",
                                      "x-ms-version": "2014-02-14"}, b"")
    assert r.status_code == 200, r.text
    padded = content + b" " * (size - len(content))
    r = hgap_put_status(emu, v, url + "&comp=page", {"Content-Length": str(size), "x-ms-range": "bytes=0-%d" % (size - 1),
                                                      "x-ms-page-write": "update", "x-ms-date": "2024-05-01T10:00:00Z",
                                                      "x-ms-version": "2014-02-14"}, padded)
    assert r.status_code == 200, r.text
    st = requests.get(emu.ws + "/_emulator/state", timeout=10).json()
    assert st["latest_status"]["channel"] == "hgap" and st["latest_status"]["blob_type"] == "PageBlob"
    assert st["latest_status"]["document"]["guestOSInfo"]["computerName"] == "guestagent-demo"
    # a misaligned page write is refused
    r = hgap_put_status(emu, v, url + "&comp=page", {"x-ms-range": "bytes=1-512", "x-ms-page-write": "update"},
                        b" " * 512)
    assert r.status_code == 502


def test_log_upload(default_emulator):
    emu = default_emulator
    v = vm(emu)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("var/log/waagent.log", "hello\n")
    headers = {"x-ms-version": "2015-09-01", "x-ms-containerid": v["container_id"],
               "x-ms-vmagentlog-deploymentid": v["config_name"].split(".")[0], "x-ms-client-name": "WALinuxAgent",
               "x-ms-client-version": "2.15.0.1", "x-ms-client-correlationid": str(uuid.uuid4())}
    assert requests.put(emu.hgap + "/vmAgentLog", data=buf.getvalue(), headers=headers, timeout=10).status_code == 200
    rec = received(emu, "log_upload")[-1]
    assert rec["valid"] and rec["document"]["names"] == ["var/log/waagent.log"]
    requests.put(emu.hgap + "/vmAgentLog", data=b"not a zip", headers=headers, timeout=10)
    assert not received(emu, "log_upload")[-1]["valid"]
