"""Every fault of the emulator's scenario language, against the client with short timeouts: it
recovers when the faults stop, gives up with a clear error when they don't, and never reads an
oversized body or an entity bomb whole."""

import socket
import time

import pytest

from tests.integration.platform.conftest import made_transport
from workers.platform import PlatformClient
from workers.platform.errors import (CertificateError, DocumentError, HttpError,
                                     InvalidContainerError, ProtocolNotFoundError,
                                     ResourceGoneError, ResponseTooLargeError)


def fired(emu, endpoint):
    return [f for f in emu.state()["faults"]["fired"] if f["endpoint"] == endpoint]


def client_for(emu, tmp_path, **more):
    return PlatformClient.from_config(emu.config(tmp_path / "state", **more),
                                      transport=made_transport())


@pytest.mark.parametrize("fault", [
    {"kind": "status", "code": 500},
    {"kind": "status", "code": 503},
    {"kind": "status", "code": 502},
    {"kind": "status", "code": 403},
    {"kind": "throttle", "retry_after": 0},
    {"kind": "reset"},
    {"kind": "delay", "seconds": 0.8},               # past Protocol.HttpTimeout: abandoned
    {"kind": "slow_body", "bytes_per_second": 200},  # past the body deadline: abandoned
], ids=lambda f: "-".join(str(v) for v in f.values()))
def test_goal_state_recovers_when_faults_stop(emu, tmp_path, fault):
    client = client_for(emu, tmp_path, Protocol__HttpTimeout=0.3)
    client.detect()
    before = len(fired(emu, "goalstate"))
    emu.faults({"goalstate": [dict(fault, repeat=2)]})
    gs = client.goal_state()
    assert gs.incarnation
    assert len(fired(emu, "goalstate")) == before + 2


@pytest.mark.parametrize("fault,attempts,words", [
    ({"kind": "status", "code": 500}, 3, "500"),
    ({"kind": "status", "code": 503}, 5, "503"),       # throttled: the budget grows to 5
    ({"kind": "throttle", "retry_after": 0}, 5, "429"),
    ({"kind": "reset"}, 3, "connection"),
    ({"kind": "delay", "seconds": 1.5}, 3, "timed out"),
], ids=["500", "503", "429", "reset", "delay"])
def test_goal_state_gives_up_with_a_clear_error(emu, tmp_path, fault, attempts, words):
    client = client_for(emu, tmp_path, Protocol__HttpTimeout=0.5)
    client.detect()
    emu.faults({"goalstate": [dict(fault, repeat=50)]})
    started = time.monotonic()
    with pytest.raises(HttpError) as e:
        client.goal_state()
    message = str(e.value)
    assert "GET http://127.0.0.1:%d/machine/?comp=goalstate" % emu.ws in message
    assert "gave up after %d attempts" % attempts in message and words in message
    assert e.value.attempts == attempts
    assert time.monotonic() - started < 15


def test_retry_after_is_honoured(emu, tmp_path):
    client = client_for(emu, tmp_path)
    client.detect()
    emu.faults({"goalstate": [{"kind": "throttle", "retry_after": 1}]})
    started = time.monotonic()
    client.goal_state()
    assert time.monotonic() - started >= 0.95


def test_delays_and_slow_bodies_within_the_timeouts_are_waited_for(emu, tmp_path):
    client = client_for(emu, tmp_path)
    client.detect()
    before = len(fired(emu, "goalstate"))
    emu.faults({"goalstate": [{"kind": "delay", "seconds": 0.3},
                              {"kind": "slow_body", "bytes_per_second": 20000}]})
    client.goal_state()
    client.goal_state()
    assert len(fired(emu, "goalstate")) == before + 2


def test_slow_body_past_its_deadline_is_abandoned(emu, tmp_path):
    client = client_for(emu, tmp_path, Protocol__HttpTimeout=0.3, Protocol__HttpAttempts=2)
    client.detect()
    emu.faults({"goalstate": [{"kind": "slow_body", "bytes_per_second": 200, "repeat": 5}]})
    started = time.monotonic()
    with pytest.raises(HttpError, match="deadline"):
        client.goal_state()
    assert time.monotonic() - started < 5
    emu.faults({"goalstate": [{"kind": "slow_body", "bytes_per_second": 200}]})
    assert client.goal_state().incarnation       # the next attempt is a normal answer


@pytest.fixture
def received_bytes(monkeypatch):
    """Bytes this process reads from sockets while the test runs."""
    count = [0]
    real = socket.socket.recv_into

    def counting(sock, buffer, *args):
        n = real(sock, buffer, *args)
        count[0] += n
        return n

    monkeypatch.setattr(socket.socket, "recv_into", counting)
    return count


@pytest.mark.parametrize("content_length", [True, False])
def test_oversized_bodies_are_not_read_whole(emu, tmp_path, received_bytes, content_length):
    client = client_for(emu, tmp_path)               # Protocol.MaxResponseBytes = 1 MiB
    client.detect()
    emu.faults({"goalstate": [{"kind": "oversized", "bytes": 200 * 1024 * 1024,
                               "content_length": content_length}]})
    before = received_bytes[0]
    with pytest.raises(ResponseTooLargeError):
        client.goal_state()
    read = received_bytes[0] - before
    assert read < 3 * 1024 * 1024, read
    assert client.goal_state().incarnation


@pytest.mark.parametrize("kind,reason", [("entity_bomb", "entit"), ("malformed_xml", "malformed")])
def test_bad_xml_is_refused(emu, tmp_path, kind, reason):
    client = client_for(emu, tmp_path)
    client.detect()
    emu.faults({"goalstate": [{"kind": kind}], "extensionsConfig": [{"kind": kind}]})
    with pytest.raises(DocumentError) as e:
        client.goal_state()
    assert reason in e.value.reason or "DTD" in e.value.reason
    gs = client.goal_state()
    with pytest.raises(DocumentError) as e:
        client.full_goal_state(gs)
    assert e.value.document == "ExtensionsConfig"
    assert client.full_goal_state(gs).extensions_config is not None


@pytest.mark.parametrize("kind", ["gone", "invalid_container"])
def test_stale_goal_state_is_refetched_once(emu, tmp_path, kind):
    client = client_for(emu, tmp_path)
    gs = client.goal_state()
    before = emu.state()["requests"]["by_endpoint"].get("goalstate", 0)
    emu.faults({"extensionsConfig": [{"kind": kind}]})
    assert client.full_goal_state(gs).extensions_config is not None
    assert emu.state()["requests"]["by_endpoint"]["goalstate"] == before + 1
    emu.faults({"extensionsConfig": [{"kind": kind, "repeat": 5}]})
    with pytest.raises(ResourceGoneError if kind == "gone" else InvalidContainerError):
        client.full_goal_state(gs)


def test_stale_host_plugin_refreshes_the_goal_state(emu, tmp_path):
    client = client_for(emu, tmp_path)
    ext = client.full_goal_state().extensions_config
    before = emu.state()["requests"]["by_endpoint"].get("goalstate", 0)
    emu.faults({"hgap_status": [{"kind": "gone"}]})
    with pytest.raises(ResourceGoneError):
        client.upload_status(b"{}", ext)
    assert emu.state()["requests"]["by_endpoint"]["goalstate"] == before + 1


def test_certificates_fall_back_to_3des(emu, tmp_path):
    client = client_for(emu, tmp_path)
    gs = client.goal_state()
    emu.faults({"certificates": [{"kind": "status", "code": 500, "repeat": 3}]})
    records = client.certificates(gs)
    assert records and all(r.has_private_key for r in records)
    ciphers = [r.get("headers", {}).get("x-ms-cipher-name") for r in emu.state()["requests"]["recent"]
               if r.get("endpoint") == "certificates"]
    assert ciphers[-4:] == ["AES128_CBC"] * 3 + ["DES_EDE3_CBC"]
    emu.faults({"certificates": [{"kind": "status", "code": 500, "repeat": 6}]})
    with pytest.raises(CertificateError, match="AES128_CBC.*DES_EDE3_CBC"):
        client.certificates(gs)


def test_health_report_retries(emu, tmp_path):
    client = client_for(emu, tmp_path)
    gs = client.goal_state()
    emu.faults({"health": [{"kind": "status", "code": 500, "repeat": 2}]})
    client.report_ready(gs)
    assert emu.state()["counts"]["health"]["valid"] == 1


def test_telemetry_keeps_three_attempts_when_throttled(emu, tmp_path):
    from workers.platform import reports
    client = client_for(emu, tmp_path)
    client.detect()
    emu.faults({"telemetrydata": [{"kind": "throttle", "retry_after": 0, "repeat": 10}]})
    with pytest.raises(HttpError, match="gave up after 3 attempts"):
        client.send_telemetry([reports.TelemetryEvent(reports.LOG_EVENTS_PROVIDER, 7, (("EventName", "x"),))])


def test_detection_gives_up(tmp_path, emulator):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = emulator.config(tmp_path / "state", Protocol__Endpoint="127.0.0.1:%d" % port)
    with pytest.raises(ProtocolNotFoundError, match="after 2 attempts.*connection refused"):
        PlatformClient.from_config(config).detect()


def test_detection_recovers(emu, tmp_path):
    emu.faults({"versions": [{"kind": "status", "code": 500, "repeat": 4}]})
    client = client_for(emu, tmp_path, Protocol__HttpAttempts=2, Protocol__DetectionAttempts=5)
    assert client.detect().port == emu.ws
