"""Every scripted fault is observable by a plain requests client."""
import json
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from tests.contract.emulator_harness import DEFAULT_SCENARIO, WS_HEADERS

SEQUENCE = [
    {"kind": "status", "code": 500},
    {"kind": "status", "code": 503, "retry_after": 3},
    {"kind": "throttle", "retry_after": 7},
    {"kind": "gone"},
    {"kind": "invalid_container"},
    {"kind": "delay", "seconds": 0.6},
    {"kind": "reset"},
    {"kind": "slow_body", "bytes_per_second": 8000},
    {"kind": "oversized", "bytes": 3000000},
    {"kind": "oversized", "bytes": 100000, "content_length": False},
    {"kind": "malformed_xml"},
    {"kind": "entity_bomb"},
    {"kind": "status", "code": 500, "repeat": 2},
    "ok",
]


@pytest.fixture
def faulty(emulator_factory, tmp_path):
    f = tmp_path / "faults.json"
    f.write_text(json.dumps({"goalstate": SEQUENCE, "hgap_status": [{"kind": "status", "code": 502}]}))
    return emulator_factory("--scenario", DEFAULT_SCENARIO, "--faults", str(f))


def test_goal_state_fault_sequence(faulty):
    url = faulty.ws + "/machine/?comp=goalstate"

    def get(**kw):
        return requests.get(url, headers=WS_HEADERS, timeout=10, **kw)

    assert get().status_code == 500
    r = get()
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    r = get()
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert get().status_code == 410
    r = get()
    assert r.status_code == 400 and "InvalidContainerConfiguration" in r.text
    t0 = time.monotonic()
    assert get().status_code == 200
    assert time.monotonic() - t0 >= 0.55
    with pytest.raises(requests.exceptions.ConnectionError):
        get()
    t0 = time.monotonic()
    r = get()
    assert r.status_code == 200 and ET.fromstring(r.content).find("Incarnation").text == "1"
    assert time.monotonic() - t0 >= 0.1  # ~1.9 KB at 8000 B/s
    r = get(stream=True)
    assert int(r.headers["Content-Length"]) == 3000000
    assert len(r.content) == 3000000 and r.content.startswith(b"<?xml")
    r = get(stream=True)
    assert "Content-Length" not in r.headers
    assert len(r.content) == 100000
    r = get()
    with pytest.raises(ET.ParseError):
        ET.fromstring(r.content)
    r = get()
    assert b"<!ENTITY lol9" in r.content and b"<!DOCTYPE" in r.content
    assert get().status_code == 500
    assert get().status_code == 500
    assert get().status_code == 200
    assert get().status_code == 200  # the script is used up
    fired = requests.get(faulty.ws + "/_emulator/state", timeout=10).json()["faults"]["fired"]
    assert [f["kind"] for f in fired][:3] == ["status", "status", "throttle"]


def test_faults_set_at_run_time(faulty):
    r = requests.post(faulty.ws + "/_emulator/faults", timeout=10, json={
        "extensionsConfig": [{"kind": "status", "code": 500}],
        "imds": [{"kind": "throttle", "retry_after": 1}],
        "versions": [{"kind": "reset"}],
    })
    assert r.status_code == 200 and set(r.json()["pending"]) == {"extensionsConfig", "imds", "versions"}
    gs = requests.get(faulty.ws + "/_emulator/state", timeout=10).json()
    assert gs["faults"]["pending"]["extensionsConfig"][0]["code"] == 500
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(faulty.ws + "/?comp=versions", timeout=10)
    assert requests.get(faulty.ws + "/?comp=versions", timeout=10).status_code == 200
    r = requests.get(faulty.imds + "/metadata/instance?api-version=2021-02-01", headers={"Metadata": "true"},
                     timeout=10)
    assert r.status_code == 429
    bad = requests.post(faulty.ws + "/_emulator/faults", json={"nonsense": []}, timeout=10)
    assert bad.status_code == 400


def test_hostgaplugin_fault(faulty):
    st = requests.get(faulty.ws + "/_emulator/state", timeout=10).json()["vm"]
    r = requests.put(faulty.hgap + "/status", timeout=10, headers={
        "x-ms-version": "2015-09-01", "x-ms-containerid": st["container_id"],
        "x-ms-host-config-name": st["config_name"], "Content-Type": "application/json"}, data=b"{}")
    assert r.status_code == 502
