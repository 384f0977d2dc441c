"""Telemetry end to end (issue 14, protocol.md §1.11, §4.13): the whole agent in a confined
host against the emulator. Event files of WALinuxAgent's test data (tests/data/walinuxagent/
events, malformed ones included) are planted in the agent's events folder and in the events
folder of an extension the broker installed; the monitoring worker (guestagent-mon) gets them
through telemetry.collect and posts them as comp=telemetrydata. Every well-formed event
arrives, each once; a malformed file is dropped with a log line and removed; no SAS signature
reaches the emulator; a flood of files is worked off in bounded rounds.
"""

import json
import os
import re
import shutil
import time

from tests.integration.extensions.conftest import ext_status
from workers.monitoring.telemetry import MAX_FILES_PER_ROUND

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
EVENTS = os.path.join(ROOT, "tests", "data", "walinuxagent", "events")
ETP = os.path.join(EVENTS, "extension_events")
PROVIDER = "69B669B9-4AF8-4C50-BDC4-6006FA76E975"
SECRET_SIG = "SeCrEtSiGnAtUrE0123456789abcdef%3D"
FIXTURE_SIG = "sXBjML1Fpk9UnTBtajo05ZTFSk0LWFGvARZ6WlVcAog"
CONF = {"Debug.EtpCollectionPeriod": "1"}

WELL_FORMED_AGENT = ["1478123456789000.tld", "1478123456789001.tld", "1479766858966718.tld",
                     "custom_script_1.tld", "custom_script_extra_parameters.tld",
                     "custom_script_nonascii_characters.tld", "custom_script_utf-16.tld",
                     "event_with_callstack.waagent.tld", "legacy_agent.tld"]
MALFORMED_AGENT = ["custom_script_invalid_json.tld", "event_with_sas_token.tld"]


def _agent_events(host):
    return os.path.join(host.varlib, "waagent", "events")


def _plant_agent(host, names, extra=()):
    folder = _agent_events(host)
    os.makedirs(folder, 0o700, exist_ok=True)
    for n, name in enumerate(names):
        shutil.copy(os.path.join(EVENTS, name), os.path.join(folder, "16%014d.%s" % (n, name)))
    for name, data in extra:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def _agent_event(message, name="Test.Telemetry"):
    return json.dumps({"eventId": 1, "providerId": PROVIDER, "parameters": [
        {"name": "Name", "value": name}, {"name": "Version", "value": "1.0"},
        {"name": "Operation", "value": "Enable"}, {"name": "OperationSuccess", "value": True},
        {"name": "Message", "value": message}, {"name": "Duration", "value": 3}]},
        ensure_ascii=False).encode()


def _events(platform):
    """Every event the emulator received, with the validity of its request."""
    out = []
    for rec in platform.state()["received"].get("telemetry", []):
        for prov in (rec.get("document") or {}).get("providers", []):
            for ev in prov["events"]:
                out.append((rec["valid"], prov["id"], ev["params"]))
    return out


def _wait(predicate, timeout, what, host):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    supervisor = "\n".join(line for line in host.log("supervisor").splitlines()
                           if "event=verb " not in line)
    raise AssertionError("%s after %.0fs\n%s\n%s" % (what, timeout, host.log("monitoring")[-4000:],
                                                    supervisor[-4000:]))


def _good(entry):
    return ext_status(entry).get("status") == "success"


def test_agent_and_extension_events_arrive_once_malformed_dropped_no_sas(platform, make_host):
    platform.add("Test.Good", "good")
    secret_message = ("download https://acct.blob.core.windows.net/c/b?sv=2020&sig=%s&se=2030 "
                      "done" % SECRET_SIG)
    extra = [("1700000000000001.tld", _agent_event(secret_message)),
             ("1700000000000002.tld", _agent_event("\u20ac" * 25000)),   # 75000 bytes > 64512
             ("1700000000000003.tld", b"{" + b" " * (300 * 1024) + b"}"),  # over the file cap
             ("1700000000000004.tld", json.dumps({"eventId": "one", "providerId": PROVIDER,
                                                  "parameters": []}).encode()),
             ("notes.txt", b"not an event file")]
    host = make_host(conf=CONF, before=lambda h: _plant_agent(
        h, WELL_FORMED_AGENT + MALFORMED_AGENT, extra))
    platform.wait_handler("Test.Good", _good, host=host)
    # The extension's events folder exists once the broker configured it: an extension writes.
    ext_events = os.path.join(host.log_dir, "azure", "Test.Good", "events")
    assert os.path.isdir(ext_events)
    for sub in ("well_formed_files", "sas_files", "int_type", "malformed_files",
                "malformed_files/bad_json_files", "empty_message", "large_messages"):
        for name in os.listdir(os.path.join(ETP, sub)):
            src = os.path.join(ETP, sub, name)
            if os.path.isfile(src):
                shutil.copy(src, os.path.join(ext_events, name))
    expected_ext = 8 + 7 + 8 + 2 + 1 + 0 + 1   # well-formed (3 files), sas, int_type, large
    expected_agent = len(WELL_FORMED_AGENT) + 1

    def arrived():
        evs = _events(platform)
        ext = [p for _, pid, p in evs if p.get("EventName", "").startswith("Test.Good-")]
        agent = [p for _, pid, p in evs if pid == PROVIDER and p["Name"] != "Test.Good"]
        ops = [p for _, pid, p in evs if pid == PROVIDER and p["Name"] == "Test.Good"]
        return len(ext) >= expected_ext and len(agent) >= expected_agent and len(ops) >= 2
    _wait(arrived, 60, "not every well-formed event arrived", host)
    time.sleep(3)     # three more rounds: nothing is sent twice
    evs = _events(platform)
    assert all(valid for valid, _, _ in evs)
    agent = [p for _, pid, p in evs if pid == PROVIDER and p["Name"] != "Test.Good"]
    ext = [p for _, pid, p in evs if p.get("EventName", "").startswith("Test.Good-")]
    # The broker's own events: each command it ran for the extension, once.
    ops = [p for _, pid, p in evs if pid == PROVIDER and p["Name"] == "Test.Good"]
    assert sorted((p["Operation"], p["OperationSuccess"], p["Version"]) for p in ops) == [
        ("Enable", "True", "1.0.0"), ("Install", "True", "1.0.0")], ops
    assert all(re.fullmatch(r"(install|enable) exited 0 after [0-9.]+s", p["Message"])
               and int(p["Duration"]) >= 0 for p in ops), ops
    assert len(agent) == expected_agent, [a.get("Name") for a in agent]
    assert len(ext) == expected_ext, len(ext)
    names = sorted(a["Message"][:40] for a in agent)
    assert "Linux Message" in names and "" in names
    assert any("Worldעיות אחרותआज" in a["Message"] for a in agent)
    assert any(a["Operation"] == "Enable" and a["Name"] == "WALinuxAgent" for a in agent)
    # The common parameters waagent adds.
    assert all(a["GAVersion"] and a["ExecutionMode"] == "IAAS" and a["ContainerId"]
               for a in agent + ext)
    # Extension events: log events of the handler, the message cut to 3072 chars.
    assert {e["EventName"] for e in ext} == {"Test.Good-1"}
    assert any(e["Context3"] == "519e4beb-018a-4bd9-8d8e-c5226cf7f56e" for e in ext)
    assert max(len(e["Context1"]) for e in ext) == 3072
    # SAS signatures: redacted, in an agent event and in an extension's.
    dump = json.dumps(platform.state())
    assert SECRET_SIG not in dump and FIXTURE_SIG not in dump
    assert any("sig=***REDACTED***" in a["Message"] for a in agent)
    assert any("sig=***REDACTED***" in e["Context1"] for e in ext)
    # Every file taken is removed, the malformed ones too, with a log line each; other names stay.
    assert sorted(os.listdir(_agent_events(host))) == ["notes.txt"]
    assert sorted(os.listdir(ext_events)) == ["1594857360.tld", "bad_name_file.json"]
    mon = host.log("monitoring")
    for why in ("custom_script_invalid_json.tld why='not JSON",
                "event_with_sas_token.tld why=\"providerId '69B669B9-4AF8-4C50-BDC4-6006FA76E9375'"
                " is not a GUID\"",
                "1700000000000003.tld why='307202 bytes, over the 98304-byte cap'",
                "1700000000000004.tld why=\"eventId 'one'",
                '1591816395.json why="not JSON: Expecting \',\' delimiter'):
        assert why in mon, (why, mon[-3000:])
    assert re.search(r"event=telemetry_event_dropped provider=%s why='\d+ bytes, over the "
                     r"64512-byte request'" % PROVIDER, mon), mon[-3000:]
    assert "event=telemetry_event_dropped handler=Test.Good file=1592350454.json" in mon
    assert "check_failed" not in mon
    # Never a crash loop: one monitoring process all along.
    assert "event=exit worker=monitoring" not in host.log("supervisor")
    assert host.proc.poll() is None


def test_a_flood_of_event_files_is_worked_off_in_bounded_rounds(platform, make_host):
    count = 2500

    def plant(h):
        folder = _agent_events(h)
        os.makedirs(folder, 0o700, exist_ok=True)
        for n in range(count):
            with open(os.path.join(folder, "17%014d.tld" % n), "wb") as f:
                f.write(_agent_event("flood %d" % n))
    host = make_host(conf={"Debug.EtpCollectionPeriod": "2"}, before=plant)

    def arrived():
        return len([p for _, _, p in _events(platform) if p["Message"].startswith("flood ")]) \
            >= count
    _wait(arrived, 120, "the flood did not arrive", host)
    got = [p["Message"] for _, _, p in _events(platform) if p["Message"].startswith("flood ")]
    assert sorted(got) == sorted("flood %d" % n for n in range(count))
    sent = [int(n) for n in re.findall(r"event=telemetry_sent events=(\d+)",
                                       host.log("monitoring"))]
    assert len(sent) >= 3 and max(sent) <= MAX_FILES_PER_ROUND, sent
    assert os.listdir(_agent_events(host)) == []
    assert "event=exit worker=monitoring" not in host.log("supervisor")
    assert all(r["valid"] and r["bytes"] <= 64512
               for r in platform.state()["received"]["telemetry"])
