"""Event files parsed (workers/monitoring/events.py) and a collection round
(workers/monitoring/telemetry.py collect) over WALinuxAgent's event fixtures: the well-formed
ones become events, the malformed are dropped with the reason, SAS signatures redacted."""

import base64
import json
import os

import pytest

from workers.monitoring import events, telemetry
from workers.platform.reports import LOG_EVENTS_PROVIDER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
EVENTS = os.path.join(ROOT, "tests", "data", "walinuxagent", "events")
ETP = os.path.join(EVENTS, "extension_events")


def read(*parts):
    with open(os.path.join(EVENTS, *parts), "rb") as f:
        return f.read()


@pytest.mark.parametrize("name", ["1478123456789000.tld", "1479766858966718.tld",
                                  "custom_script_1.tld", "custom_script_utf-16.tld",
                                  "custom_script_nonascii_characters.tld", "legacy_agent.tld",
                                  "event_with_callstack.waagent.tld"])
def test_well_formed_agent_events(name):
    event = events.agent_event(read(name))
    params = dict(event.parameters)
    assert event.event_id == 1 and event.provider_id == "69B669B9-4AF8-4C50-BDC4-6006FA76E975"
    assert params["Name"] and "Operation" in params


def test_utf16_and_types_are_kept():
    params = dict(events.agent_event(read("custom_script_utf-16.tld")).parameters)
    assert params["Name"] == "Microsoft.Azure.Extensions.CustomScript"
    params = dict(events.agent_event(read("1478123456789001.tld")).parameters)
    assert params["OperationSuccess"] is False and params["Duration"] == 42


@pytest.mark.parametrize("data,why", [
    (read("custom_script_invalid_json.tld"), "not JSON"),
    (read("event_with_sas_token.tld"), "is not a GUID"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"eventId": true, "providerId": "x", "parameters": []}', "eventId"),
    (b"\xff\xfe\x00", "not UTF-8 or UTF-16"),
    (b"[" * 50000 + b"]" * 50000, "nested too deep"),
    (json.dumps({"eventId": 1, "providerId": "69B669B9-4AF8-4C50-BDC4-6006FA76E975",
                 "parameters": [{"name": "A", "value": [1]}]}).encode(), "type list"),
    (json.dumps({"eventId": 1, "providerId": "69B669B9-4AF8-4C50-BDC4-6006FA76E975",
                 "parameters": [{"name": "<bad>", "value": 1}]}).encode(), "parameter name"),
    (json.dumps({"eventId": 1, "providerId": "69B669B9-4AF8-4C50-BDC4-6006FA76E975",
                 "parameters": [{"name": "A", "value": -1}]}).encode(), "outside uint64"),
])
def test_malformed_agent_files_say_why(data, why):
    with pytest.raises(events.Malformed, match=why):
        events.agent_event(data)


def test_sas_signatures_are_redacted_in_agent_and_extension_events():
    doc = json.loads(read("event_with_sas_token.tld"))
    doc["providerId"] = "69B669B9-4AF8-4C50-BDC4-6006FA76E975"
    message = dict(events.agent_event(json.dumps(doc).encode()).parameters)["Message"]
    assert "sig=" in message and "***REDACTED***" in message
    assert "sig=" in doc["parameters"][5]["value"] and doc["parameters"][5]["value"] != message
    got, dropped = events.extension_events("H", read("extension_events", "sas_files",
                                                     "1591905410.json"))
    assert not dropped and "sXBjML1Fpk9UnTBtajo05ZTFSk0LWFGvARZ6WlVcAog" not in repr(got)
    assert "sig=***REDACTED***" in dict(got[0].parameters)["Context1"]


def test_extension_events_shape_case_and_types():
    got, dropped = events.extension_events("Contoso.H", read("extension_events", "int_type",
                                                             "1519934744.json"))
    assert not dropped and len(got) == 1
    e = got[0]
    assert e.provider_id == LOG_EVENTS_PROVIDER and e.event_id == 7
    p = dict(e.parameters)
    assert p["EventName"] == "Contoso.H-1" and p["CapabilityUsed"] == "INFO"
    assert p["Context3"] == "519e4beb-018a-4bd9-8d8e-c5226cf7f56e"   # OpErAtiOnID
    assert p["EventPid"] == "3228" and p["Context2"] == "2023-03-13T01:21:05.1960563Z"


def test_extension_messages_cut_and_bad_events_dropped():
    got, dropped = events.extension_events("H", read("extension_events", "large_messages",
                                                     "1591921510.json"))
    assert got and all(len(dict(e.parameters)["Context1"]) <= 3072 for e in got)
    got, dropped = events.extension_events("H", read("extension_events", "missing_parameters",
                                                     "1592273793.json"))
    assert got == [] and len(dropped) == 7 and "missing message" in dropped[0]
    got, dropped = events.extension_events("H", read("extension_events", "empty_message",
                                                     "1592350454.json"))
    assert got == [] and any("an empty message" in d for d in dropped)
    with pytest.raises(events.Malformed, match="not JSON"):
        events.extension_events("H", read("extension_events", "malformed_files",
                                          "bad_json_files", "1591816395.json"))


class FakeWorker:
    """Answers telemetry.collect from a list of files, 64 at a time."""

    def __init__(self, files):
        self.files, self.calls = list(files), 0

    def call(self, verb, args):
        assert verb == "telemetry.collect" and args == {}
        self.calls += 1
        batch, self.files = self.files[:64], self.files[64:]
        return {"files": batch, "refused": [], "more": bool(self.files)}, []


def _file(source, handler, data):
    return {"source": source, "handler": handler, "name": "1.json",
            "data": base64.b64encode(data).decode()}


def test_a_round_is_bounded_and_an_extension_gets_360_events():
    one = json.dumps({"EventLevel": "INFO", "Message": "m", "Version": "1", "TaskName": "t",
                      "EventPid": "1", "EventTid": "1", "OperationId": "o",
                      "TimeStamp": "t"}).encode()
    w = FakeWorker([_file("extension", "H", b"[" + b",".join([one] * 100) + b"]")] * 5)
    assert len(telemetry.collect(w)) == 360
    w = FakeWorker([_file("agent", "", read("1478123456789000.tld"))] * 3000)
    assert len(telemetry.collect(w)) == telemetry.MAX_FILES_PER_ROUND
    assert w.calls == telemetry.MAX_FILES_PER_ROUND // 64 and len(w.files) == 3000 - 1024
