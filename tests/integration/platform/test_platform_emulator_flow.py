"""The whole client against the emulator as a real process: detection, goal state and documents,
certificates, every report, the status blob, vmSettings, IMDS, downloads."""

import json
import logging
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.platform.conftest import made_transport
from workers.platform import PlatformClient, reports
from workers.platform.endpoint import Endpoint


STATUS = json.dumps({"version": "1.1", "timestampUTC": "2026-01-01T00:00:00Z",
                     "aggregateStatus": {"guestAgentStatus": {
                         "version": "2.15.0.1", "status": "Ready",
                         "formattedMessage": {"lang": "en-US", "message": "Guest Agent is running"}},
                         "handlerAggregateStatus": []},
                     "guestOSInfo": {"computerName": "x", "osName": "Linux", "osVersion": "1",
                                     "version": "2.15.0.1"},
                     "supportedFeatures": []}).encode()


def test_full_flow(emu, tmp_path):
    client = PlatformClient.from_config(emu.config(tmp_path / "state"), transport=made_transport())
    assert client.detect() == Endpoint("127.0.0.1", emu.ws)
    gs = client.goal_state()
    assert gs.incarnation and gs.container_id and gs.role_instance_id
    full = client.full_goal_state(gs)
    assert full.hosting_environment is not None and full.shared_config is not None
    ext = full.extensions_config
    assert ext.handler("Contoso.Demo.HelloWorld").valid
    settings = ext.handler("Contoso.Demo.HelloWorld").settings[0]
    assert settings.public_settings == {"greeting": "hello"} and settings.protected_settings

    records = client.certificates(gs)
    exported = emu.control("GET", "certificates")["certificates"]
    assert sorted(r.thumbprint for r in records) == sorted(c["thumbprint"] for c in exported)
    assert all(r.has_private_key for r in records)
    assert settings.certificate_thumbprint in {r.thumbprint for r in records}
    for r in records:
        cert = x509.load_pem_x509_certificate(r.certificate_pem.encode())
        key = serialization.load_pem_private_key(r.private_key_pem.encode(), None)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
            key.public_key().public_bytes(serialization.Encoding.DER, spki)

    client.report_not_ready(reports.PROVISIONING, "Starting", gs)
    client.report_not_ready(reports.PROVISIONING_FAILED, "x" * 5000, gs)
    client.report_ready(gs)
    client.report_role_properties(records[0].thumbprint, gs)
    assert client.send_telemetry([reports.TelemetryEvent(
        reports.EXTENSION_EVENTS_PROVIDER, 1, (("Name", "guestagent"), ("Version", "2.15.0.1"),
                                               ("Operation", "Test"), ("OperationSuccess", True),
                                               ("Message", "hello"), ("Duration", 0)))]) == 1
    client.report_health_service([reports.Observation("GuestAgentPluginHeartbeat", True, "", "")])
    assert client.upload_status(STATUS, ext) == "hostplugin"
    vm_settings = client.vm_settings()
    assert vm_settings.supported in (True, False)
    assert isinstance(client.imds.compute(), dict)
    assert client.hostplugin.available()

    state = emu.state()
    counts = state["counts"]
    for kind in ("health", "role_properties", "telemetry", "health_service", "status"):
        assert counts[kind]["invalid"] == 0, (kind, [r["errors"] for r in state["received"][kind]])
        assert counts[kind]["valid"] >= 1, kind
    assert counts["rejected"]["valid"] + counts["rejected"]["invalid"] == 0, state["received"]["rejected"]
    health = state["received"]["health"]
    assert [h["document"]["state"] for h in health] == ["NotReady", "NotReady", "Ready"]
    assert state["latest_status"]["document"]["aggregateStatus"]["guestAgentStatus"]["status"] == "Ready"
    for request in state["requests"]["recent"]:
        headers = {k.lower(): v for k, v in request.get("headers", {}).items()}
        if "user-agent" in headers:
            assert headers["user-agent"].startswith("WALinuxAgent/2."), request


def test_direct_status_upload_when_the_host_plugin_fails(emu, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    client = PlatformClient.from_config(emu.config(tmp_path / "state"), transport=made_transport())
    ext = client.full_goal_state().extensions_config
    emu.faults({"hgap_status": [{"kind": "status", "code": 500, "repeat": 10}],
                "storage_status": [{"kind": "status", "code": 500}]})
    assert client.upload_status(STATUS, ext) == "direct"
    signature = parse_qs(urlsplit(ext.status_upload_blob).query)["sig"][0]
    assert "sig=***REDACTED***" in caplog.text and signature not in caplog.text
    for record in client.certificates():
        assert record.private_key_pem.splitlines()[1] not in caplog.text
    state = emu.state()
    assert state["latest_status"]["channel"] == "direct", state["received"]["status"][-1:]
    assert state["counts"]["status"]["invalid"] == 0


def test_download_from_storage_and_host_plugin(emu, tmp_path):
    client = PlatformClient.from_config(emu.config(tmp_path / "state"), transport=made_transport())
    handler = client.full_goal_state().extensions_config.handler("Contoso.Demo.HelloWorld")
    manifest = client.download(handler.manifest_uris, is_manifest=True)
    assert b"PluginVersionManifest" in manifest
    emu.faults({"storage_manifest": [{"kind": "status", "code": 404, "repeat": 20}]})
    assert client.download(handler.manifest_uris, is_manifest=True) == manifest
    by_endpoint = emu.state()["requests"]["by_endpoint"]
    assert by_endpoint.get("hgap_extensionArtifact", 0) >= 1


def test_an_unchanged_goal_state_is_not_parsed_again_and_a_new_one_is_seen_at_once(emu, tmp_path):
    """The extensions worker asks for the goal state every poll: the same bytes give the same
    parsed GoalState (no XML parse: issue 17's idle CPU), and the next incarnation is never
    hidden by it."""
    client = PlatformClient.from_config(emu.config(tmp_path / "state"), transport=made_transport())
    client.detect()
    first = client.goal_state()
    assert client.goal_state() is first
    emu.control("POST", "incarnation")
    second = client.goal_state()
    assert int(second.incarnation) == int(first.incarnation) + 1
    assert client.goal_state() is second
